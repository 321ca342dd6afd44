"""CLI tests: real `robustlab evaluate` runs and every bad input of the foundation issue."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

PLUGINS = str(Path(__file__).parent / "plugins")
CLEAN = str(Path(__file__).parent / "suites" / "clean.yaml")


def run_cli(*args, cwd=None, env_extra=None, timeout=600):
    env = {**os.environ, "PYTHONPATH": PLUGINS + os.pathsep + os.environ.get("PYTHONPATH", ""), "MLFLOW_DISABLE_TELEMETRY": "true"}
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "robustlab", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def test_help_does_not_import_torch():
    code = "import sys; from click.testing import CliRunner; from robustlab.cli import main; r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output; assert 'evaluate' in r.output; bad = [m for m in ('torch', 'mlflow') if m in sys.modules]; assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_version():
    r = run_cli("--version")
    assert r.returncode == 0 and "0.1.0" in r.stdout


def test_listings():
    for cmd, needle in (("suites", "quick"), ("models", "zoo:digits-cnn"), ("datasets", "samples")):
        r = run_cli(cmd)
        assert r.returncode == 0 and needle in r.stdout, r.stderr


def test_evaluate_digits_end_to_end_and_deterministic(tmp_path):
    """`quick` at batch size 100 gives, check for check, the stored golden scorecard that was made at
    batch size 128: same seed, same scorecard, whatever the batch size (timestamps and durations aside)."""
    from golden_cases import diff_cards, normalise
    from robustlab.scorecard import Scorecard

    out = tmp_path / "run"
    r = run_cli("evaluate", "--model", "zoo:digits-cnn", "--suite", "quick", "--out", str(out), "--seed", "0", "--no-mlflow", "--batch-size", "100")
    assert r.returncode == 0, r.stderr
    assert "clean/accuracy" in r.stdout
    card = json.loads((out / "scorecard.json").read_text())
    assert card["run"]["batch_size"] == 100
    golden = normalise(Scorecard.read(Path(__file__).parent / "golden" / "quick.json").to_dict())
    new = normalise(Scorecard.read(out / "scorecard.json").to_dict())
    out_: list[str] = []
    diff_cards(json.loads(json.dumps(golden["checks"])), json.loads(json.dumps(new["checks"])), "/checks", out_)
    assert not out_, "\n".join(out_)  # equal up to the float noise of another CPU (golden_cases.REL)
    assert card["schema_version"] and card["model"]["sha256"] and card["data"]["n"] == 360
    assert card["suite"]["sha256"] and card["environment"]["packages"]["torch"]
    clean = next(c for c in card["checks"] if c["check"] == "clean")
    assert clean["status"] == "ok" and 0.95 < clean["metrics"]["clean/accuracy"] <= 1
    lo_hi = clean["intervals"]["clean/accuracy"]
    assert lo_hi["low"] < clean["metrics"]["clean/accuracy"] < lo_hi["high"]
    assert len(clean["per_sample"]["correct"]) == 360 == len(card["data"]["ids"])
    assert clean["definitions"]["clean/accuracy"]


def test_cifar_resnet_clean_matches_plain_loop(tmp_path):
    """`robustlab evaluate --model zoo:cifar10-resnet18` gives the accuracy of a plain PyTorch loop (the
    whole `quick` suite on this model is covered by tests/test_golden.py)."""
    from robustlab.data import load_dataset
    from robustlab.models import load_model

    r = run_cli("evaluate", "--model", "zoo:cifar10-resnet18", "--suite", CLEAN, "--out", str(tmp_path), "--no-mlflow", "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    card = json.loads(r.stdout)
    acc = card["checks"][0]["metrics"]["clean/accuracy"]
    m = load_model("zoo:cifar10-resnet18")
    d = load_dataset("samples:cifar10")
    with torch.no_grad():
        plain = (m.net(d.images()).argmax(1) == d.y).float().mean().item()
    assert acc == pytest.approx(plain, abs=1e-12)


def test_cifar_resnet_on_shared_images(tmp_path, cifar_npz):
    r = run_cli("evaluate", "--model", "zoo:cifar10-resnet18", "--data", f"npz:{cifar_npz}", "--suite", CLEAN, "--out", str(tmp_path), "--no-mlflow", "--quiet", "--limit", "1000")
    assert r.returncode == 0, r.stderr
    card = json.loads((tmp_path / "scorecard.json").read_text())
    assert card["checks"][0]["metrics"]["clean/accuracy"] == pytest.approx(0.937, abs=0.0015)


def test_model_formats_via_cli(tmp_path):
    sys.path.insert(0, PLUGINS)
    import rl_test_models

    net = rl_test_models.tiny()
    torch.save(net.state_dict(), tmp_path / "sd.pt")
    torch.jit.script(net).save(str(tmp_path / "ts.pt"))
    torch.save(net, tmp_path / "whole.pt")
    common = ["--data", "digits", "--no-mlflow", "--quiet", "--suite", CLEAN]
    r = run_cli("evaluate", "--model", str(tmp_path / "sd.pt"), "--arch", "factory:rl_test_models:tiny", "--out", str(tmp_path / "o1"), *common)
    assert r.returncode == 0, r.stderr
    r = run_cli("evaluate", "--model", "factory:rl_test_models:tiny", "--out", str(tmp_path / "o2"), *common)
    assert r.returncode == 0, r.stderr
    for f in ("ts.pt", "whole.pt"):
        r = run_cli("evaluate", "--model", str(tmp_path / f), "--out", str(tmp_path / f"o_{f}"), *common)
        assert r.returncode == 2 and "--trust-code" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        r = run_cli("evaluate", "--model", str(tmp_path / f), "--trust-code", "--out", str(tmp_path / f"t_{f}"), *common)
        assert r.returncode == 0, r.stderr
        card = json.loads((tmp_path / f"t_{f}" / "scorecard.json").read_text())
        assert card["model"]["trusted"] is True and card["run"]["trust_code"] is True
    accs = {json.loads((tmp_path / o / "scorecard.json").read_text())["checks"][0]["metrics"]["clean/accuracy"] for o in ("o1", "o2", "t_ts.pt", "t_whole.pt")}
    assert len(accs) == 1  # same network, same numbers whatever the format


def _bad_inputs(tmp: Path):
    good = tmp / "good.pt"
    from robustlab.models.architectures import DigitsCNN

    torch.save(DigitsCNN().state_dict(), good)
    blob = good.read_bytes()
    (tmp / "trunc.pt").write_bytes(blob[: len(blob) // 3])
    (tmp / "corrupt.pt").write_bytes(b"garbage" * 100)
    np.savez(tmp / "range.npz", x=np.full((4, 8, 8), 300.0, dtype=np.float32), y=np.zeros(4, dtype=np.int64))
    np.savez(tmp / "labels.npz", x=np.zeros((4, 8, 8), dtype=np.uint8), y=np.array([0, 1, 12, 3]))
    np.savez(tmp / "shape.npz", x=np.zeros((4, 3, 32, 32), dtype=np.uint8), y=np.zeros(4, dtype=np.int64))
    (tmp / "bad.yaml").write_text("checks: [clean\n")
    (tmp / "unknown.yaml").write_text("checks:\n  - check: pgdd\n")
    net = DigitsCNN()
    torch.save(net, tmp / "whole.pt")
    return [
        (["--model", str(tmp / "missing.pt")], "does not exist"),
        (["--model", str(tmp)], "is a folder, not a model file"),  # was "does not exist" for a folder that does
        (["--model", f"state-dict:{tmp}", "--arch", "zoo-arch:digits-cnn"], "is a folder, not a model file"),
        (["--model", "/dev/null", "--arch", "zoo-arch:digits-cnn"], "is not a regular file"),
        (["--model", str(tmp / "trunc.pt"), "--arch", "zoo-arch:digits-cnn"], "corrupt or truncated"),
        (["--model", str(tmp / "corrupt.pt"), "--arch", "zoo-arch:digits-cnn"], "corrupt"),
        (["--model", str(tmp / "whole.pt"), "--data", "digits"], "--trust-code"),
        (["--model", "zooo:digits-cnn"], "zoo"),
        (["--model", "zoo:digits-cn"], "digits-cnn"),
        (["--model", "factory:rl_test_models:wrong_shape", "--data", "digits", "--num-classes", "10"], "shape"),
        (["--model", "factory:rl_test_models:nan_logits", "--data", "digits"], "NaN"),
        (["--model", "zoo:digits-cnn", "--data", f"npz:{tmp / 'range.npz'}"], "[0, 1]"),
        (["--model", "zoo:digits-cnn", "--data", f"npz:{tmp / 'labels.npz'}"], "outside the model's 10 classes"),
        (["--model", "zoo:digits-cnn", "--data", f"npz:{tmp / 'shape.npz'}"], "expects (1, 8, 8)"),
        (["--model", "zoo:digits-cnn", "--suite", "nosuch"], "unknown suite"),
        (["--model", "zoo:digits-cnn", "--suite", str(tmp / "bad.yaml")], "not valid YAML"),
        (["--model", "zoo:digits-cnn", "--suite", str(tmp / "unknown.yaml")], "unknown check"),
        (["--model", "zoo:digits-cnn", "--data", "digit"], "did you mean"),
    ]


def test_bad_inputs_exit_2_one_line(tmp_path, monkeypatch):
    """In-process (click's runner) to keep the test fast; one case also runs as a real process below."""
    from click.testing import CliRunner

    from robustlab.cli import main

    monkeypatch.syspath_prepend(PLUGINS)
    cases = _bad_inputs(tmp_path)
    runner = CliRunner()
    for args, needle in cases:
        r = runner.invoke(main, ["evaluate", *args, "--out", str(tmp_path / "out"), "--no-mlflow", "--quiet"])
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
        assert r.exit_code == 2, (args, r.stderr, r.exception)
        assert len(lines) == 1 and "Traceback" not in r.stderr, (args, r.stderr)
        assert needle.lower() in lines[0].lower(), (args, lines[0])


def test_bad_input_real_process(tmp_path):
    r = run_cli("evaluate", "--model", "zoo:digits-cnn", "--data", f"npz:{tmp_path / 'nope.npz'}", "--no-mlflow")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "does not exist" in r.stderr, r.stderr


def test_debug_shows_traceback(tmp_path):
    r = run_cli("--debug", "evaluate", "--model", str(tmp_path / "missing.pt"), "--no-mlflow")
    assert r.returncode != 0 and "Traceback" in r.stderr


def test_an_errored_check_is_inconclusive_without_a_policy_too(tmp_path):
    """Before: with no --policy, a run whose check errored exited 0 ("success"), so `robustlab evaluate && ship`
    shipped on a scorecard that lacked what the suite asked for."""
    base = ["evaluate", "--model", "factory:rl_test_models:raises_in_checks", "--data", "digits", "--suite", CLEAN, "--limit", "40",
            "--no-mlflow", "--no-report", "--quiet", "--device", "cpu"]
    r = run_cli(*base, "--out", str(tmp_path / "a"))
    assert r.returncode == 3, r.stderr[-2000:]
    card = json.loads((tmp_path / "a" / "scorecard.json").read_text())
    assert [c["status"] for c in card["checks"]] == ["error"] and "simulated failure" in card["checks"][0]["reason"]
    line = [ln for ln in r.stderr.splitlines() if "errored" in ln]
    assert len(line) == 1 and "exit 3" in line[0] and "clean: " in line[0] and "simulated failure" in line[0], r.stderr[-2000:]
    # a policy decides instead: allowing errored checks passes, the default (inconclusive) is 3, fail is 1
    for action, code in (("allow", 0), ("inconclusive", 3), ("fail", 1)):
        pol = tmp_path / f"{action}.yaml"
        pol.write_text(f"version: 1\nchecks: {{error: {action}}}\nrules: []\n")
        r = run_cli(*base, "--out", str(tmp_path / action), "--policy", str(pol))
        assert r.returncode == code, (action, r.stderr[-2000:])
    # a run whose checks all ran still exits 0 without a policy
    r = run_cli(*[a if a != "factory:rl_test_models:raises_in_checks" else "factory:rl_test_models:tiny" for a in base], "--out", str(tmp_path / "ok"))
    assert r.returncode == 0, r.stderr[-2000:]
