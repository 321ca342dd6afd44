"""Issue 13, parts 4 and 5: input validation messages, the internal-error exit code and its crash log."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from robustlab.cli import main
from robustlab.errors import DataError, ModelLoadError, TrustError

CLEAN = str(Path(__file__).parent / "suites" / "clean.yaml")


def test_random_bytes_are_not_called_a_pickle_but_a_pickle_is(tmp_path):
    from robustlab.models import load_model

    rnd = tmp_path / "random.pt"
    rnd.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ModelLoadError, match="not a recognised model file"):
        load_model(str(rnd))
    pk = tmp_path / "module.pt"
    pk.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    with pytest.raises(TrustError, match="pickled Python object"):
        load_model(str(pk))


def _npz(path: Path, **arrays) -> str:
    np.savez(path, **arrays)
    return f"npz:{path}"


@pytest.mark.parametrize("what,arrays,needle", [
    ("float labels", {"y": np.arange(6) % 3 + 0.5}, "labels must be integers"),
    ("complex pixels", {"x": np.zeros((6, 8, 8), np.complex64)}, "complex"),
    ("duplicate ids", {"ids": np.array(["a", "b", "a", "c", "d", "e"])}, "'a' occurs more than once"),
    ("duplicate class names", {"classes": np.array(["cat", "dog", "cat"])}, "'cat' occurs more than once"),
])
def test_silently_accepted_data_is_refused(tmp_path, what, arrays, needle):
    from robustlab.data import load_dataset

    base = {"x": np.zeros((6, 8, 8), np.float32), "y": np.arange(6) % 3}
    with pytest.raises(DataError, match=needle):
        load_dataset(_npz(tmp_path / "d.npz", **{**base, **arrays}))


def test_bare_npy_and_corrupt_zip(tmp_path):
    from robustlab.data import load_dataset

    np.save(tmp_path / "a.npy", np.zeros((3, 8, 8)))
    with pytest.raises(DataError, match="single .npy array"):
        load_dataset(f"npz:{tmp_path / 'a.npy'}")
    (tmp_path / "c.npz").write_bytes(b"PK\x03\x04" + bytes(300))
    with pytest.raises(DataError, match="cannot read"):
        load_dataset(f"npz:{tmp_path / 'c.npz'}")


@pytest.mark.parametrize("meta,needle", [
    ([1, 2], "must be a JSON object"), ({"num_classes": "10"}, "'num_classes' must be a positive integer"),
    ({"mean": "0.5"}, "'mean' must be a list"), ({"std": [0.0]}, "'std' must be positive"),
    ({"class_names": ["a", "a"]}, "distinct names"),
])
def test_model_metadata_types(meta, needle):
    from robustlab.models.metadata import validate_metadata

    with pytest.raises(ModelLoadError, match=needle):
        validate_metadata(meta, "the sidecar w.json")


def test_three_channel_mean_on_one_channel_model():
    from robustlab.models import LoadOptions, load_model

    with pytest.raises(ModelLoadError, match="1-channel"):
        load_model("zoo:digits-cnn", LoadOptions(device="cpu", overrides={"mean": (0.5, 0.5, 0.5)}))


def test_sidecar_dataset_choice_is_announced(tmp_path):
    """A sidecar's `dataset` key picks the data when --data is omitted: the run says so."""
    import shutil
    import subprocess
    import sys

    from robustlab.models.zoo import ZOO

    w = tmp_path / "w.safetensors"
    shutil.copy(ZOO["digits-cnn"].locate(), w)
    (tmp_path / "w.json").write_text(json.dumps({"dataset": "digits"}))
    r = subprocess.run([sys.executable, "-m", "robustlab", "evaluate", "--model", str(w), "--suite", CLEAN, "--limit", "10", "--out", str(tmp_path / "o"),
                        "--no-mlflow", "--no-report", "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "data: digits (no --data given; the data set named by a sidecar file" in r.stderr


def test_internal_error_exits_4_with_a_crash_log(tmp_path, monkeypatch):
    import robustlab.pipelines.evaluate

    def boom(cfg):
        raise ZeroDivisionError("an internal bug")

    monkeypatch.setattr(robustlab.pipelines.evaluate, "evaluate", boom)
    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["evaluate", "--model", "zoo:digits-cnn", "--out", str(out), "--no-mlflow", "--quiet", "--suite", CLEAN])
    assert r.exit_code == 4, (r.output, r.exception)
    assert r.stderr.count("\n") == 1 and "internal error: ZeroDivisionError: an internal bug" in r.stderr
    logs = list(out.glob("crash-*.log"))
    assert len(logs) == 1 and "Traceback" in logs[0].read_text() and "boom" in logs[0].read_text()
    assert str(logs[0]) in r.stderr


def test_environment_errors_exit_2_not_4(tmp_path):
    (tmp_path / "f").write_text("x")
    r = CliRunner().invoke(main, ["evaluate", "--model", "zoo:digits-cnn", "--out", str(tmp_path / "f" / "o"), "--no-mlflow", "--suite", CLEAN])
    assert r.exit_code == 2 and "is a file" in r.stderr
    from robustlab.errors import user_error_from

    assert user_error_from(OSError(28, os.strerror(28), "/out/scorecard.json")).exit_code == 2  # ENOSPC
    assert user_error_from(OSError(30, os.strerror(30), "/out")).exit_code == 2  # EROFS
    assert user_error_from(RuntimeError("bug")) is None
