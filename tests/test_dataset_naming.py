"""Naming the data set once (--dataset, npz 'dataset' entry, folder manifest.json): precedence,
conflicts, and what the run records (issue 14, 'Which data set is this?')."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from robustlab.cli import main
from robustlab.data.naming import auto_protocol, family, resolve_dataset_name
from robustlab.data.plugins import load_dataset
from robustlab.errors import DataError, UnknownNameError


def test_resolve_precedence_and_conflicts() -> None:
    assert resolve_dataset_name("CIFAR10", None, None) == ("cifar10", "--dataset")
    assert resolve_dataset_name(None, "cifar100", "cifar10")[0] == "cifar100"  # the data overrides the model's default
    assert resolve_dataset_name(None, None, "digits") == ("digits", "the model's default data set")
    assert resolve_dataset_name(None, None, "npz:foo.npz")[0] is None
    name, source = resolve_dataset_name(None, None, None)
    assert name is None and "--dataset" in source
    with pytest.raises(DataError, match="name it once"):
        resolve_dataset_name("cifar10", "mnist", None)
    with pytest.raises(UnknownNameError, match="cifar10"):
        resolve_dataset_name("cifar-10", None, None)
    assert family("cifar100") == "cifar" and auto_protocol("mnist") == "cifar-c-small" and auto_protocol(None) is None


def test_npz_and_folder_carry_the_name(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 8, 8), np.uint8), y=np.array([0, 1]), dataset="digits")
    assert load_dataset(f"npz:{tmp_path / 'd.npz'}").extra["dataset"] == "digits"
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / "f" / c).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "f" / c / "0.png")
    (tmp_path / "f" / "manifest.json").write_text(json.dumps({"dataset": "mnist"}))
    assert load_dataset(f"folder:{tmp_path / 'f'}").extra["dataset"] == "mnist"


def _digits_npz(path: Path, name: str | None) -> None:
    ds = load_dataset("digits").limit(20)
    arrays = {"x": (ds.images().numpy()[:, 0] * 255).round().astype(np.uint8), "y": ds.y.numpy()}
    if name:
        arrays["dataset"] = np.array(name)
    np.savez(path, **arrays)  # type: ignore[arg-type]


def test_evaluate_records_name_and_protocol(tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text("name: t\nchecks:\n  - check: corruption\n    params: {corruptions: [contrast], severities: [1], baseline: none}\n")
    _digits_npz(tmp_path / "d.npz", "digits")
    r = CliRunner().invoke(main, ["evaluate", "--model", "zoo:digits-cnn", "--data", f"npz:{tmp_path / 'd.npz'}", "--suite", str(suite),
                                  "--no-mlflow", "--no-report", "--out", str(tmp_path / "o"), "-q"])
    assert r.exit_code == 0, r.output
    card = json.loads((tmp_path / "o" / "scorecard.json").read_text())
    assert card["data"]["dataset"] == "digits" and "npz" in card["data"]["dataset_source"]
    check = card["checks"][0]
    assert check["params"]["protocol_resolved"] == "cifar-c-small" and "data set named digits" in check["params"]["protocol_source"]
    r = CliRunner().invoke(main, ["evaluate", "--model", "zoo:digits-cnn", "--data", f"npz:{tmp_path / 'd.npz'}", "--dataset", "mnist",
                                  "--suite", str(suite), "--no-mlflow", "--no-report", "--out", str(tmp_path / "p"), "-q"])
    assert r.exit_code == 2 and "name it once" in r.output


def test_evaluate_prints_the_budget_and_its_source(tmp_path: Path) -> None:
    """Issue 14: the budget (norm, epsilons, where they came from) and the corruption protocol are
    printed as one progress line on stderr, never on the --json stdout."""
    suite = tmp_path / "s.yaml"
    suite.write_text("name: t\nchecks:\n  - check: fgsm\n    params: {norm: linf}\n  - check: fgsm\n    id: fgsm_given\n"
                     "    params: {norm: l2, epsilons: [0.25]}\n  - check: corruption\n    params: {corruptions: [contrast], severities: [1], baseline: none}\n")
    _digits_npz(tmp_path / "d.npz", "digits")
    args = ["evaluate", "--model", "zoo:digits-cnn", "--data", f"npz:{tmp_path / 'd.npz'}", "--suite", str(suite), "--no-mlflow", "--no-report", "--limit", "8"]
    r = subprocess.run([sys.executable, "-m", "robustlab", *args, "--out", str(tmp_path / "o"), "--json"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("budget: ")]
    assert len(lines) == 1, r.stderr
    line = lines[0]
    # the default FGSM sweep is 0.25/0.5/1/2 x digits' Linf budget 0.1, robustlab's choice (not a field standard)
    assert "fgsm: linf eps 0.025, 0.05, 0.1 (primary), 0.2 = 0.1 x (0.25, 0.5, 1, 2)" in line
    assert "robustlab's default (not a field standard) digits budget" in line and "named by the data (npz" in line
    assert "fgsm_given: l2 eps 0.25, set in the suite (epsilons:)" in line
    assert "corruption: protocol auto -> cifar-c-small (data set digits)" in line
    assert "budget:" not in r.stdout
    json.loads(r.stdout)  # stdout stays one JSON document
    r = subprocess.run([sys.executable, "-m", "robustlab", *args, "--out", str(tmp_path / "p"), "--dataset", "digits", "-q"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "budget:" not in r.stderr  # --quiet: no progress lines
