"""Hostile or careless check parameters and ``corrupt`` / ``defend`` / ``compress`` options: each must be
refused the user-error way (one ``error:`` line on stderr, exit 2, before the long work) rather than
crash (exit 4), fail late (exit 3), or report a meaningless number."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from click.testing import CliRunner

from robustlab.cli import main
from robustlab.errors import SuiteError
from robustlab.suite import parse_suite

FAST = ["--threads", "1", "--no-mlflow", "--quiet", "--no-report"]


def _one_error_line(r) -> str:  # noqa: ANN001 - click's Result
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    line = r.stderr.strip()
    assert line.startswith("error:") and "\n" not in line and "Traceback" not in line, r.stderr
    return line


def _suite(body: str) -> None:
    parse_suite(body, source="t.yaml")


# -- corrupt: the device is checked before any work ------------------------------------------------
@pytest.mark.parametrize("device", ["foo", "cuda:7"])
def test_corrupt_bad_device_is_a_usage_error(tmp_path: Path, device: str) -> None:
    import torch

    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    out = tmp_path / "c"
    r = CliRunner().invoke(main, ["corrupt", "--data", "digits", "--limit", "4", "--corruptions", "fog", "--out", str(out), "--device", device, "-q"])
    line = _one_error_line(r)
    assert "--device" in line or "device" in line
    assert not list(out.glob("crash-*.log")) and not (out / "fog.npy").exists()


# -- defend: a weight decay that is not a finite number trains a NaN model ----------------------------
@pytest.mark.parametrize("wd", ["inf", "nan"])
def test_defend_weight_decay_must_be_finite(tmp_path: Path, wd: str) -> None:
    from robustlab.defenses.trainer import TrainConfig

    with pytest.raises(SuiteError, match="weight_decay"):
        TrainConfig(weight_decay=float(wd)).validate()
    with pytest.raises(SuiteError, match="momentum"):
        TrainConfig(momentum=math.nan).validate()
    r = CliRunner().invoke(main, ["defend", "--model", "zoo:digits-cnn", "--data", "digits", "--method", "fast-at", "--epochs", "1", "--train-limit", "20",
                                  "--val-limit", "10", "--weight-decay", wd, "--out", str(tmp_path / "d.safetensors"), "-q", "--no-mlflow"])
    assert "--weight-decay" in _one_error_line(r) and "is not a finite number" in r.stderr  # refused as the option is read
    assert not (tmp_path / "d.safetensors").exists()


# -- ood: a detector's own parameters are checked when the suite loads -------------------------------
@pytest.mark.parametrize("params", [
    "{detectors: [{name: knn, k: 0}]}",
    "{detectors: [{name: odin, temperature: 0}]}",
    "{detectors: [{name: energy, temperature: -1}]}",
    "{detectors: [vim], vim_dim: 0}",
])
def test_ood_detector_parameters_refused_when_the_suite_loads(params: str) -> None:
    with pytest.raises(SuiteError, match="ood"):
        _suite(f"checks: [{{check: ood, params: {params}}}]")


def test_ood_detector_good_parameters_still_load() -> None:
    _suite("checks: [{check: ood, params: {detectors: [msp, {name: knn, k: 5}, {name: odin, temperature: 10}], vim_dim: 4}}]")


# -- ood / uncertainty: an unknown set name is a typo, not a set to skip -----------------------------
@pytest.mark.parametrize("body", [
    "{check: ood, params: {far: [nosuchdata]}}",
    "{check: ood, params: {near: ['mine=cifar1O:x']}}",
    "{check: ood, params: {fit_data: 'nosuch:x'}}",
    "{check: uncertainty, params: {ood: [nosuchdata]}}",
    "{check: uncertainty, params: {shift: [nosuchdata]}}",
])
def test_unknown_ood_set_refused_when_the_suite_loads(body: str) -> None:
    with pytest.raises(SuiteError, match="unknown data plugin"):
        _suite(f"checks: [{body}]")


def test_known_ood_sets_still_load() -> None:
    _suite("checks: [{check: ood, params: {far: ['noise:uniform', blobs, photos, 'x=samples:cifar10', 'npz:/missing/file.npz'], near: [digits]}}]")


# -- ood: the evaluation data named as an OOD set gives a meaningless AUROC --------------------------
def test_ood_set_that_is_the_evaluation_data_is_refused(tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text("checks:\n  - clean\n  - {check: ood, params: {far: [digits], near: [], shift: [], detectors: [msp]}}\n")
    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["evaluate", "--model", "zoo:digits-cnn", "--suite", str(suite), "--limit", "12", "--out", str(out), *FAST])
    line = _one_error_line(r)
    assert "not out-of-distribution" in line and "digits" in line
    assert (out / "results.sqlite").exists()  # the clean check's batches stay for --resume


def test_ood_files_of_one_name_in_two_folders_are_two_sets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """npz ids carry only the file's name (``data.npz/x/0``): another folder's ``data.npz`` shares ids, not
    images, so it is a valid OOD set; the evaluation file itself, named by another path, is refused."""
    import numpy as np
    from sklearn.datasets import load_digits

    d = load_digits()
    for sub, x in (("eval", d.images[:30] / 16.0), ("ood", np.random.default_rng(0).random((30, 8, 8)))):
        (tmp_path / sub).mkdir()
        np.savez(tmp_path / sub / "data.npz", x=x.astype("float32"), y=d.target[:30])
    monkeypatch.chdir(tmp_path)
    for far, refused in (("npz:ood/data.npz", False), ("npz:./eval/../eval/data.npz", True)):
        suite = tmp_path / "s.yaml"
        suite.write_text(f"checks:\n  - {{check: ood, params: {{far: ['{far}'], near: [], shift: [], detectors: [msp]}}}}\n")
        r = CliRunner().invoke(main, ["evaluate", "--model", "zoo:digits-cnn", "--data", f"npz:{tmp_path / 'eval' / 'data.npz'}", "--suite", str(suite),
                                      "--out", str(tmp_path / far.replace("/", "_")), *FAST])
        if refused:
            assert "not out-of-distribution" in _one_error_line(r)
        else:
            assert r.exit_code == 0, (r.exit_code, r.stderr[-2000:])


# -- Ctrl-C: the hint names --resume only for commands that have it ---------------------------------
def test_interrupt_hint_of_commands_without_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import robustlab.corruptions.writer
    import robustlab.pipelines.compress

    def interrupted(*a: object, **kw: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(robustlab.corruptions.writer, "render", interrupted)
    monkeypatch.setattr(robustlab.pipelines.compress, "compress", interrupted)
    r = CliRunner().invoke(main, ["corrupt", "--data", "digits", "--limit", "4", "--corruptions", "fog", "--out", str(tmp_path / "c"), "-q"])
    assert r.exit_code == 130 and "--resume" not in r.stderr and "rerun the same command" in r.stderr, r.stderr
    r = CliRunner().invoke(main, ["compress", "--model", "zoo:digits-cnn", "--method", "fp16", "--out", str(tmp_path / "m.safetensors")])
    assert r.exit_code == 130 and "--resume" not in r.stderr and "interrupted" in r.stderr, r.stderr


def test_corrupt_refuses_a_folder_another_render_is_writing(tmp_path: Path) -> None:
    """Two `corrupt` runs on one --out raced on its blocks (one failed on a vanished .partial temp file);
    the folder is locked as `evaluate`'s is, and the second run says who holds it."""
    import subprocess
    import sys

    out = tmp_path / "c"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; from robustlab.store import OutputLock; "
                               "OutputLock(Path(sys.argv[1]), command='robustlab corrupt (the other one)').acquire(); print('held', flush=True); time.sleep(60)",
                               str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        r = CliRunner().invoke(main, ["corrupt", "--data", "digits", "--limit", "4", "--corruptions", "fog", "--out", str(out), "-q"])
        line = _one_error_line(r)
        assert "in use by another run" in line and "the other one" in line
        assert not (out / ".partial").exists()
    finally:
        holder.kill()
        holder.wait()
    r = CliRunner().invoke(main, ["corrupt", "--data", "digits", "--limit", "4", "--corruptions", "fog", "--out", str(out), "-q"])
    assert r.exit_code == 0, r.stderr
    assert (out / "manifest.json").is_file()
