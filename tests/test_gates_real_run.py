"""End to end through `robustlab evaluate` on the zoo digits model (real scorecard, real gates)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from robustlab.cli import main
from robustlab.scorecard import Scorecard


@pytest.fixture(autouse=True)
def _no_ambient_mlflow(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


def _evaluate(out: Path, *extra: str) -> int:
    res = CliRunner().invoke(main, ["evaluate", "--model", "zoo:digits-cnn", "--suite", "quick", "--limit", "60", "--device", "cpu", "-q", "--out", str(out), *extra])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return int(res.exit_code)


def test_evaluate_writes_scorecard_report_mlflow_and_gates(tmp_path):
    pytest.importorskip("robustlab.commands.evaluate")
    passing = tmp_path / "pass.yaml"
    passing.write_text(yaml.safe_dump({"rules": [{"name": "clean accuracy floor", "metric": "clean/accuracy", "op": ">=", "threshold": 0.5, "on": "lower"}]}))
    failing = tmp_path / "fail.yaml"
    failing.write_text(yaml.safe_dump({"rules": [
        {"name": "clean accuracy floor", "metric": "clean/accuracy", "op": ">=", "threshold": 0.5},
        {"name": "impossible calibration", "metric": "clean/ece", "op": "<=", "threshold": 0.0},
    ]}))

    out = tmp_path / "pass"
    assert _evaluate(out, "--policy", str(passing), "--junit", str(tmp_path / "pass.xml")) == 0
    card = Scorecard.read(out / "scorecard.json")
    assert card.model["sha256"] and isinstance(card.data.get("ids"), list)
    assert (out / "report.html").is_file() and "clean accuracy floor" in (out / "report.html").read_text()
    assert (out / "mlflow.db").is_file()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out.resolve() / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("robustlab").experiment_id])
    assert len(runs) == 1 and runs[0].data.tags["robustlab.verdict"] == "pass"
    assert runs[0].data.metrics["clean/accuracy"] == pytest.approx(card.metrics()["clean/accuracy"])

    out2 = tmp_path / "fail"
    assert _evaluate(out2, "--policy", str(failing), "--junit", str(tmp_path / "fail.xml"), "--no-mlflow") == 1
    cases = ET.parse(tmp_path / "fail.xml").getroot().iter("testcase")
    assert [c.get("name") for c in cases if c.find("failure") is not None] == ["impossible calibration"]
    assert not (out2 / "mlflow.db").exists()
