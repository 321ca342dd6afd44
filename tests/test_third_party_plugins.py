"""Third-party plugins end to end: ``tests/plugins/robustlab_extras`` (its own pyproject.toml) adds a
model loader, a data source, a corruption, a detector, a defense, a check, a gate protocol and an attack through
entry points only, and each runs through the CLI without any edit to robustlab.

The package is installed the way pip lays it out (the package folder plus a ``.dist-info`` with the
``entry_points.txt`` generated from the pyproject's ``[project.entry-points]``) into a temporary
folder on ``PYTHONPATH``, so ``importlib.metadata`` discovers it exactly as an installed distribution.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

EXTRAS = Path(__file__).parent / "plugins" / "robustlab_extras"


def install_extras(site: Path) -> Path:
    """Lay out robustlab-extras in ``site`` as an installed distribution; return ``site``."""
    project = tomllib.loads((EXTRAS / "pyproject.toml").read_text())["project"]
    shutil.copytree(EXTRAS / "src" / "robustlab_extras", site / "robustlab_extras")
    dist = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    groups = project["entry-points"]
    (dist / "entry_points.txt").write_text("".join(f"[{g}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n" for g, eps in groups.items()))
    return site


@pytest.fixture(scope="module")
def extras_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_extras(tmp_path_factory.mktemp("site"))


def run(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)}
    return subprocess.run([sys.executable, "-m", "robustlab", *args], capture_output=True, text=True, env=env, timeout=600)


SUITE = """
checks:
  - check: clean
  - check: corruption
    params: {corruptions: [extras_dim, brightness], severities: [1, 5], baseline: none}
  - check: ood
    params: {detectors: [msp, {name: extras_gap, scale: 2.0}], near: ["noise:gaussian"], far: ["noise:uniform"], fit_limit: 100, val_limit: 50, ood_limit: 50, synthetic_n: 50}
  - check: extras_confidence
    params: {temperature: 2.0}
  - check: attack
    id: signsteps
    params: {attack: extras_signsteps, steps: 2, epsilons: [0.05, 0.1], audit: false}
"""


def test_entry_points_are_discovered_for_every_kind(extras_site: Path) -> None:
    code = (
        "from robustlab.models.loaders import MODEL_LOADERS; from robustlab.data import DATASETS; "
        "from robustlab.corruptions.registry import FAST_CORRUPTIONS; from robustlab.ood.base import DETECTORS; "
        "from robustlab.defenses.base import DEFENSES; from robustlab.checks.base import CHECKS; from robustlab.gates.protocols import GATE_PROTOCOLS; "
        "from robustlab.attacks.base import ATTACKS; "
        "print([n in r for n, r in [('extras', MODEL_LOADERS), ('extras-digits', DATASETS), ('extras_dim', FAST_CORRUPTIONS), ('extras_gap', DETECTORS), "
        "('extras-smooth', DEFENSES), ('extras_confidence', CHECKS), ('extras_confidence', GATE_PROTOCOLS), ('extras_signsteps', ATTACKS)]])"
    )
    env = {**os.environ, "PYTHONPATH": str(extras_site)}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.stdout.strip() == str([True] * 8), r.stdout + r.stderr
    listing = run(extras_site, "models").stdout + run(extras_site, "datasets").stdout
    assert "extras:" in listing and "extras-digits" in listing


@pytest.mark.slow
def test_evaluate_and_compare_with_plugin_model_data_corruption_detector_check_protocol(extras_site: Path, tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE)
    r = run(extras_site, "evaluate", "--model", "extras:linear", "--data", "extras-digits:80", "--suite", str(suite), "--out", str(tmp_path / "a"), "--no-mlflow", "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    card = json.loads((tmp_path / "a" / "scorecard.json").read_text())
    assert card["model"]["format"] == "plugin:extras" and card["data"]["spec"] == "extras-digits:80"
    metrics = {k: v for c in card["checks"] for k, v in c["metrics"].items()}
    value = {k: (v["value"] if isinstance(v, dict) else v) for k, v in metrics.items()}
    dim = sorted(k for k in value if "extras_dim" in k and k.endswith("accuracy"))
    assert len(dim) >= 2, sorted(value)
    assert [k for k in value if "extras_gap" in k and "auroc" in k], sorted(value)
    # the plugin attack through the generic check: a sweep whose robust accuracy cannot rise with eps
    ra = [value[f"adversarial/signsteps/eps_{e}/robust_accuracy"] for e in ("0.05", "0.1")]
    assert ra[1] <= ra[0] <= value["clean/accuracy"], ra
    conf = value["extras_confidence/mean_confidence"]
    assert 0.1 <= conf <= 1.0
    ood = next(c for c in card["checks"] if c["check"] == "ood")
    assert {"name": "extras_gap", "scale": 2.0} in ood["params"]["detectors"]
    # the gate protocol of the plugin check: a confidence at another temperature is not comparable
    suite2 = tmp_path / "s2.yaml"
    suite2.write_text("checks:\n  - check: extras_confidence\n    params: {temperature: 1.0}\n")
    r = run(extras_site, "evaluate", "--model", "extras:linear", "--data", "extras-digits:80", "--suite", str(suite2), "--out", str(tmp_path / "b"), "--no-mlflow", "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    r = run(extras_site, "compare", str(tmp_path / "a" / "scorecard.json"), str(tmp_path / "b" / "scorecard.json"))
    assert r.returncode == 2 and "extras_confidence" in r.stderr and "temperature 2.0 vs temperature 1.0" in r.stderr, r.stderr


@pytest.mark.parametrize("entry, msg", [
    ("{name: extras_gap, scael: 2.0}", "did you mean 'scale'"),
    ("{name: extras_gap, scale: big}", "scale takes a float"),
])
def test_plugin_detector_params_are_validated_from_its_signature(extras_site: Path, tmp_path: Path, entry: str, msg: str) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(f"checks:\n  - check: ood\n    params: {{detectors: [msp, {entry}]}}\n")
    r = run(extras_site, "evaluate", "--model", "extras:linear", "--data", "extras-digits:40", "--suite", str(suite), "--out", str(tmp_path / "o"), "--no-mlflow", "--quiet")
    assert r.returncode == 2 and msg in r.stderr, r.stderr


@pytest.mark.slow
def test_defend_with_plugin_method_and_generated_options(extras_site: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.safetensors"
    base = ["defend", "--model", "zoo:digits-cnn", "--data", "digits", "--epochs", "1", "--train-limit", "64", "--val-limit", "32", "--no-mlflow", "--quiet", "--out", str(out)]
    bad = run(extras_site, *base, "--method", "extras-smooth", "--smoothing", "1.5")
    assert bad.returncode == 2 and "smoothing must be in [0, 1)" in bad.stderr, bad.stderr
    wrong = run(extras_site, *base, "--method", "pgd-at", "--smoothing", "0.2")
    assert wrong.returncode == 2 and "--smoothing applies to extras-smooth" in wrong.stderr, wrong.stderr
    r = run(extras_site, *base, "--method", "extras-smooth", "--smoothing", "0.2")
    assert r.returncode == 0 and out.is_file(), r.stderr[-3000:]
    r = run(extras_site, "evaluate", "--model", str(out), "--data", "extras-digits:40", "--suite", str(Path(__file__).parent / "suites" / "clean.yaml"), "--out", str(tmp_path / "e"), "--no-mlflow", "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
