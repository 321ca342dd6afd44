"""The ``uncertainty`` check on the bundled digits model: keys, intervals, per-sample results, the
validation-only fitting protocol, the CLI, the report and a release gate on an uncertainty key."""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from robustlab.checks.base import CHECKS, RunContext
from robustlab.errors import SuiteError
from robustlab.metric_keys import is_legal_key
from robustlab.store import ResultStore

SMALL = {"corruptions": ["contrast"], "severities": [5], "adv_limit": 24, "adv_steps": 3, "n_boot": 30, "ood": ["noise:uniform"], "synthetic_n": 30}


def _ctx(model, out: Path, data=None) -> RunContext:
    from robustlab.data import load_dataset
    from robustlab.runner import prepare_data

    def load_data(s: str, split: str = "test", *, adapt: bool = False, limit: int | None = None):
        return prepare_data(model, load_dataset(s, split=split), adapt=adapt).limit(limit)

    data = data if data is not None else load_data("digits", "test", adapt=True)
    return RunContext(model=model, data=data, seed=0, batch_size=128, device=torch.device("cpu"), out_dir=out,
                      store=ResultStore(None, {}), load_data=load_data, progress=lambda it, **kw: it, data_spec="digits")


def _run(ctx: RunContext, **params):
    cls = CHECKS.get("uncertainty")
    return cls(id="uncertainty", params=cls.parse_params({**SMALL, **params})).run(ctx)


def test_uncertainty_check_digits(digits_model, tmp_path: Path) -> None:
    ctx = _ctx(digits_model, tmp_path)
    r = _run(ctx, detectors=["odin", "knn"])
    m, iv = r.metrics, r.intervals
    assert all(is_legal_key(k) for k in m)
    assert m["uncertainty/model/accuracy"] > 0.9
    for s in ("msp", "max_logit", "energy", "doctor", "entropy"):
        assert 0.5 < m[f"uncertainty/failure/{s}/auroc"] <= 1.0
        assert iv[f"uncertainty/failure/{s}/auroc"].method == "bootstrap"
        assert 0 <= m[f"uncertainty/selective/{s}/eaurc"] <= m[f"uncertainty/selective/{s}/aurc"]
        assert 0 <= m[f"uncertainty/selective/{s}/coverage_0.9/coverage"] <= 1
    for meth in ("lac", "aps", "raps"):
        for lv in ("0.9", "0.95"):
            base = f"uncertainty/conformal/{meth}/{lv}"
            for cond in ("", "/s5/contrast", "/s5", "/corruption", "/shift/mnist", "/adversarial/pgd/eps_0.03137"):
                k = f"{base}{cond}/coverage"
                assert 0 <= m[k] <= 1 and iv[k].method == "wilson" and iv[k].low - 1e-12 <= m[k] <= iv[k].high + 1e-12, (k, m[k])
            assert 0 <= m[f"{base}/ood/noise_uniform/nonempty_rate"] <= 1
            assert m[f"{base}/mean_set_size"] >= 1 - m[f"{base}/empty_rate"] - 1e-9
    assert 0.5 < m["uncertainty/failure/odin/auroc"] <= 1 and "uncertainty/selective/odin/aurc" in m
    assert "uncertainty/failure/knn/auroc" not in m and any("knn needs fitted" in n for n in r.notes)
    # pooled corruption = the one corruption here
    assert m["uncertainty/model/corruption/accuracy"] == m["uncertainty/model/s5/contrast/accuracy"]
    assert m["uncertainty/calibration/ts/corruption/nll"] == m["uncertainty/calibration/ts/s5/contrast/nll"]
    assert m["uncertainty/calibration/ts/nll"] <= m["uncertainty/calibration/raw/nll"] + 0.05
    n = len(ctx.data)
    assert len(r.per_sample["uncertainty/correct"]) == n and len(r.per_sample["uncertainty/conformal/aps/0.9/set_size"]) == n
    sizes = [v for v in r.per_sample["uncertainty/conformal/aps/0.9/set_size"] if v is not None]
    assert sum(sizes) / len(sizes) == pytest.approx(m["uncertainty/conformal/aps/0.9/mean_set_size"])
    for name in ("risk_coverage", "reliability", "conformal_coverage_vs_severity", "conformal_set_size_vs_severity", "failure_vs_severity"):
        assert name in r.series
    assert r.series["conformal_coverage_vs_severity"].x == [0, 5]
    assert any("uncertainty/conformal/<method>/<level>/coverage" in k for k in r.definitions)
    # the README's promise: the scorecard says which adversarial source was used, also with --save-adversarial off
    src = r.definitions["uncertainty/adversarial_source"]
    assert src.startswith("adversarial/pgd/eps_<e>") and "--save-adversarial was off" in src, src
    # the fitted state (temperature, conformal quantiles) comes from the val split only: replacing
    # every test image by noise leaves it unchanged
    noise = dataclasses.replace(ctx.data, x=torch.rand_like(ctx.data.images()), loader=None)
    r2 = _run(_ctx(digits_model, tmp_path / "g", data=noise))
    fitted = [k for k in m if k.endswith("/temperature") or k.endswith("/qhat")]
    assert fitted and all(r2.metrics[k] == m[k] for k in fitted)
    assert r2.metrics["uncertainty/model/accuracy"] < 0.5


def test_uncertainty_params_are_validated() -> None:
    cls = CHECKS.get("uncertainty")
    for bad in ({"scores": ["nope"]}, {"methods": ["aps", "xyz"]}, {"levels": [1.2]}, {"severities": [7]}, {"corruptions": ["fog2"]}, {"primary_score": "energy", "scores": ["msp"]}):
        with pytest.raises(SuiteError):
            cls.parse_params(bad)


@pytest.mark.slow  # ~30 s: a CLI run in a subprocess plus two gate runs
def test_uncertainty_cli_report_and_gate(tmp_path: Path) -> None:
    suite = tmp_path / "u.yaml"
    suite.write_text(yaml.safe_dump({"name": "u", "checks": [{"check": "uncertainty", "params": {**SMALL, "ood": [], "adv_limit": 0}}]}))
    out = tmp_path / "run"
    cli = [sys.executable, "-m", "robustlab"]
    r = subprocess.run([*cli, "evaluate", "--model", "zoo:digits-cnn", "--suite", str(suite), "--out", str(out), "--no-mlflow", "--quiet"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    card = json.loads((out / "scorecard.json").read_text())
    chk = next(c for c in card["checks"] if c["check"] == "uncertainty")
    k = "uncertainty/conformal/aps/0.9/corruption/coverage"
    low = chk["intervals"][k]["low"]
    html = (out / "report.html").read_text()
    assert "risk_coverage" in html and "conformal_coverage_vs_severity" in html and "<svg" in html
    for threshold, code in ((max(0.0, low - 0.01), 0), (min(1.0, low + 0.01), 1)):
        pol = tmp_path / f"p{code}.yaml"
        pol.write_text(yaml.safe_dump({"rules": [{"metric": k, "op": ">=", "threshold": threshold, "on": "lower"}]}))
        g = subprocess.run([*cli, "gate", str(out / "scorecard.json"), "--policy", str(pol)], capture_output=True, text=True, timeout=300)
        assert g.returncode == code, (threshold, low, g.stdout, g.stderr)
    assert not math.isnan(low)
