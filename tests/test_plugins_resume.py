import json
import os
import subprocess
import sys
from pathlib import Path

PLUGINS = str(Path(__file__).parent / "plugins")
CLEAN = str(Path(__file__).parent / "suites" / "clean.yaml")


def _run(args, extra_path=""):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (extra_path, PLUGINS, os.environ.get("PYTHONPATH", "")) if p)}
    return subprocess.run([sys.executable, "-m", "robustlab", *args], capture_output=True, text=True, env=env, timeout=600)


def test_third_party_model_plugin_entry_point(tmp_path):
    dist = tmp_path / "site" / "rl_fake_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: rl-fake-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[robustlab.models]\nfakezoo = rl_test_models:plugin_load\n")
    r = _run(["models"], extra_path=str(tmp_path / "site"))
    assert "fakezoo:" in r.stdout, r.stderr
    r = _run(["evaluate", "--model", "fakezoo:tiny", "--data", "digits", "--out", str(tmp_path / "o"), "--no-mlflow", "--quiet", "--suite", CLEAN], extra_path=str(tmp_path / "site"))
    assert r.returncode == 0, r.stderr
    card = json.loads((tmp_path / "o" / "scorecard.json").read_text())
    assert card["model"]["format"] == "plugin:fakezoo"


def test_resume_reuses_and_refuses_changed_model(tmp_path):
    out = tmp_path / "o"
    r = _run(["evaluate", "--model", "zoo:digits-cnn", "--out", str(out), "--no-mlflow", "--quiet", "--suite", CLEAN])
    assert r.returncode == 0, r.stderr
    first = json.loads((out / "scorecard.json").read_text())
    r = _run(["evaluate", "--model", "zoo:digits-cnn", "--out", str(out), "--no-mlflow", "--quiet", "--resume", "--suite", CLEAN])
    assert r.returncode == 0, r.stderr
    second = json.loads((out / "scorecard.json").read_text())
    assert first["checks"][0]["metrics"] == second["checks"][0]["metrics"] and second["run"]["resumed"]
    r = _run(["evaluate", "--model", "factory:rl_test_models:tiny", "--data", "digits", "--out", str(out), "--no-mlflow", "--quiet", "--resume", "--suite", CLEAN])
    assert r.returncode == 2 and "cannot resume" in r.stderr and "model_sha256" in r.stderr, r.stderr
