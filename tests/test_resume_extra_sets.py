"""`--resume` never reuses results computed on images that have changed since, including the sets the
run fingerprint does not cover: an OOD check's OOD sets, the uncertainty check's OOD and shift sets,
and precomputed corruption files (found by a probe: a rewritten OOD npz was resumed from the stored
scores, AUROC 0.984 reported against 0.843 fresh, exit 0)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from click.testing import CliRunner

from robustlab.cli import main

SUITE = """name: extra-sets
checks:
  - check: ood
    params: {{detectors: [msp, energy], near: ["npz:{ood}"], far: ["noise:uniform"], shift: [], synthetic_n: 30}}
  - check: uncertainty
    params: {{shift: [], ood: ["npz:{ood}"], n_boot: 20}}
"""


def _write_ood(path: Path, kind: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((40, 1, 8, 8), dtype=np.float32) if kind == "noise" else np.zeros((40, 1, 8, 8), np.float32)
    np.savez(path, x=x, y=np.zeros(40, np.int64))


def _metrics(out: Path) -> dict[str, float]:
    card = json.loads((out / "scorecard.json").read_text())
    return {k: v for c in card["checks"] for k, v in c["metrics"].items()}


def _evaluate(suite: Path, out: Path, *extra: str) -> None:
    r = CliRunner().invoke(main, ["evaluate", "--model", "zoo:digits-cnn", "--data", "digits", "--limit", "48", "--seed", "1", "--threads", "1",
                                  "--suite", str(suite), "--no-mlflow", "--no-report", "--quiet", "--out", str(out), *extra])
    assert r.exit_code == 0, r.output


def test_a_changed_ood_set_is_recomputed_on_resume(tmp_path: Path) -> None:
    ood = tmp_path / "ood.npz"
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE.format(ood=ood))
    _write_ood(ood, "noise")
    _evaluate(suite, tmp_path / "a")
    before = _metrics(tmp_path / "a")
    _write_ood(ood, "blank")  # same name, same count, other images
    _evaluate(suite, tmp_path / "a", "--resume")
    resumed = _metrics(tmp_path / "a")
    _evaluate(suite, tmp_path / "fresh")
    fresh = _metrics(tmp_path / "fresh")
    changed = [k for k in fresh if ("/ood/" in k or k.startswith("ood/")) and fresh[k] != before[k]]
    assert changed, "the blank set must score differently from the noise set, or this test shows nothing"
    assert resumed == fresh


def test_precomputed_cell_fingerprint_follows_its_files(tmp_path: Path) -> None:
    from robustlab.corruptions.precomputed import open_precomputed

    root = tmp_path / "CIFAR-10-C"
    root.mkdir()
    np.save(root / "labels.npy", np.zeros(10, np.uint8))
    np.save(root / "fog.npy", np.zeros((10, 32, 32, 3), np.uint8))
    pre = open_precomputed(root, ["fog"])
    a = pre.cell_fingerprint("fog", 1)
    assert pre.cell_fingerprint("fog", 1) == a and pre.cell_fingerprint("fog", 2) != a
    np.save(root / "fog.npy", np.full((10, 32, 32, 3), 255, np.uint8))
    st = (root / "fog.npy").stat()
    os.utime(root / "fog.npy", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # a rewrite within the clock's resolution still moves it
    assert pre.cell_fingerprint("fog", 1) != a


def test_the_run_fingerprint_names_the_device() -> None:
    """A run resumed on another kind of device would mix results that differ in their last bits (AutoAttack flags can flip)."""
    from robustlab.data import load_dataset
    from robustlab.models import LoadOptions, load_model
    from robustlab.runner import RunConfig, run_fingerprint
    from robustlab.suite import load_suite

    model = load_model("zoo:digits-cnn", device="cpu")
    cfg = RunConfig(model_spec="zoo:digits-cnn", load=LoadOptions(device="cpu"), suite=load_suite("quick"))
    fp = run_fingerprint(cfg, model, load_dataset("digits").limit(8), "digits")
    assert fp["device"] == "cpu"
