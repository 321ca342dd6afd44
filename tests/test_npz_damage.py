"""Damaged or unusable npz data is refused in one line (exit 2), never mapped as images (found by a probe:
an archive whose header claims more images than it stores, and one whose bytes no longer match its CRC,
both evaluated with exit 0 on garbage; RGBA, 2-channel and empty images crashed `robustlab corrupt`)."""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from numpy.lib import format as npformat
from sklearn.datasets import load_digits

from robustlab.cli import main
from robustlab.data.plugins import load_dataset
from robustlab.errors import DataError


def _digits(n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    d = load_digits()
    return (d.images[:n] / 16 * 255).astype(np.uint8), d.target[:n].astype(np.int64)


def _overrun(path: Path) -> Path:
    """x.npy's header claims 20 images, 16 are stored (the next bytes are y.npy's and the zip directory)."""
    x, y = _digits(16)
    head = io.BytesIO()
    npformat.write_array_header_1_0(head, {"descr": "|u1", "fortran_order": False, "shape": (20, 8, 8)})
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("x.npy", head.getvalue() + x.tobytes())
        b = io.BytesIO()
        np.save(b, np.concatenate([y, y[:4]]))
        z.writestr("y.npy", b.getvalue())
    return path


def _bad_crc(path: Path, *, compressed: bool) -> Path:
    x, y = _digits(16)
    (np.savez_compressed if compressed else np.savez)(path, x=x, y=y)
    raw = bytearray(path.read_bytes())
    if compressed:  # flip bytes inside the deflated x member
        i = raw.find(b"x.npy") + 200
    else:
        i = raw.find(b"\x93NUMPY") + 328
    raw[i:i + 64] = b"\xff" * 64
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("make, says", [
    (_overrun, "needs 1280 bytes but its member holds 1024"),
    (lambda p: _bad_crc(p, compressed=False), "do not match the archive's CRC-32"),
    (lambda p: _bad_crc(p, compressed=True), "is damaged"),
])
def test_a_damaged_npz_is_refused(tmp_path: Path, make, says):
    path = make(tmp_path / "bad.npz")
    with pytest.raises(DataError, match=says):
        load_dataset(f"npz:{path}", split="test").images(slice(0, 16))
    r = CliRunner().invoke(main, ["evaluate", "--model", "zoo:digits-cnn", "--data", f"npz:{path}", "--suite", "quick", "--limit", "8",
                                  "--no-mlflow", "--no-report", "--quiet", "--out", str(tmp_path / "out")])
    assert r.exit_code == 2 and says in r.output and not (tmp_path / "out" / "scorecard.json").exists(), r.output


def test_an_intact_npz_still_reads_and_is_checked_once(tmp_path: Path):
    x, y = _digits(16)
    np.savez(tmp_path / "ok.npz", x=x, y=y)
    d = load_dataset(f"npz:{tmp_path / 'ok.npz'}", split="test")
    assert np.allclose(d.images(slice(0, 16)).numpy()[:, 0], x / 255.0, atol=1e-6)


@pytest.mark.parametrize("x, says", [
    (np.random.default_rng(0).random((4, 8, 8, 4), dtype=np.float32), "4 channels last (RGBA)"),
    (np.zeros((4, 0, 8), np.float32), "images with no pixels"),
])
def test_rgba_and_empty_images_are_refused_at_load(tmp_path: Path, x, says):
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(4))
    r = CliRunner().invoke(main, ["corrupt", "--data", f"npz:{tmp_path / 'd.npz'}", "--out", str(tmp_path / "c"), "-q", "--corruptions", "gaussian_noise"])
    assert r.exit_code == 2 and says in r.output, r.output


def test_two_channel_images_are_refused_by_corrupt(tmp_path: Path):
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(0).random((4, 2, 8, 8), dtype=np.float32), y=np.arange(4))
    r = CliRunner().invoke(main, ["corrupt", "--data", f"npz:{tmp_path / 'd.npz'}", "--out", str(tmp_path / "c"), "-q", "--corruptions", "gaussian_noise"])
    assert r.exit_code == 2 and "1 (grey) or 3 (RGB) channels" in r.output, r.output


def test_dim_uint8_images_are_warned_about(tmp_path: Path, caplog):
    d = load_digits()
    np.savez(tmp_path / "u16.npz", x=d.images[:16].astype(np.uint8), y=d.target[:16])  # 0..16 stored as uint8
    with caplog.at_level(logging.WARNING, logger="robustlab.data.npz"):
        load_dataset(f"npz:{tmp_path / 'u16.npz'}", split="test")
    assert "uint8 images reach only 16" in caplog.text


@pytest.mark.parametrize("how", [("--dataset", "cifar10"), ()])
def test_a_data_set_name_the_images_cannot_be_is_refused_before_any_check(tmp_path: Path, how):
    """Found by a probe: 8x8 grey digits named cifar10 (on the command line or in the npz) ran every check
    with CIFAR budgets, then exited 3 on the corruption protocol, suggesting --resume."""
    x, y = _digits(16)
    extra = {} if how else {"dataset": "cifar10"}
    np.savez(tmp_path / "d.npz", x=(x / 255.0).astype(np.float32), y=y, **extra)
    r = CliRunner().invoke(main, ["evaluate", "--model", "zoo:digits-cnn", "--data", f"npz:{tmp_path / 'd.npz'}", *how, "--suite", "quick",
                                  "--no-mlflow", "--no-report", "--quiet", "--out", str(tmp_path / "out")])
    assert r.exit_code == 2 and "whose images are 3x32x32, but these are 1x8x8" in r.output, r.output
    from robustlab.data.naming import check_images_fit

    check_images_fit("cifar10", (3, 224, 224), "--dataset")  # CIFAR upsampled for an ImageNet-pretrained network is fine


def test_npz_class_names_relabel_by_the_models_names(tmp_path: Path):
    """An npz whose 'classes' lists the model's classes in another order means its labels by those names
    (found by a probe: they were read as the model's indices, so every label pointed at another class)."""
    x, y = _digits(64)
    order = [str(9 - i) for i in range(10)]  # label i means digit 9 - i
    np.savez(tmp_path / "perm.npz", x=(x / 255.0).astype(np.float32), y=9 - y, classes=np.array(order))
    np.savez(tmp_path / "plain.npz", x=(x / 255.0).astype(np.float32), y=y)
    acc = {}
    for name in ("perm", "plain"):
        r = CliRunner().invoke(main, ["evaluate", "--model", "zoo:digits-cnn", "--data", f"npz:{tmp_path / name}.npz", "--suite", "quick", "--limit", "64",
                                      "--no-mlflow", "--no-report", "--quiet", "--json", "--out", str(tmp_path / name)])
        assert r.exit_code == 0, r.output
        card = __import__("json").loads((tmp_path / name / "scorecard.json").read_text())
        acc[name] = next(c for c in card["checks"] if c["id"] == "clean")["metrics"]["clean/accuracy"]
    assert acc["perm"] == acc["plain"] > 0.9


def test_a_model_with_another_class_count_than_the_named_data_set_is_warned_about(tmp_path: Path, monkeypatch, caplog):
    """Found by a probe: a 1000-class model on the 10-class digits ran with exit 0 and no word."""
    from robustlab.data.naming import class_count_note

    assert class_count_note("digits", 10) == "" and class_count_note(None, 1000) == ""
    assert "predictions of its other classes count as errors" in class_count_note("cifar10", 1000)
    (tmp_path / "rl_wide.py").write_text("import torch\nfrom torch import nn\n\ndef build():\n    torch.manual_seed(0)\n"
                                         "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 1000))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with caplog.at_level(logging.WARNING):
        r = CliRunner().invoke(main, ["evaluate", "--model", "factory:rl_wide:build", "--input-shape", "1,8,8", "--data", "digits", "--suite", "quick",
                                      "--limit", "8", "--no-mlflow", "--no-report", "--quiet", "--out", str(tmp_path / "out")])
    assert r.exit_code in (0, 3), r.output
    assert "the model has 1000 classes but digits has 10" in caplog.text


def test_wrong_kind_of_path_and_huge_unsigned_labels_are_named(tmp_path: Path):
    x, y = _digits(4)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    np.savez(tmp_path / "u.npz", x=x, y=np.array([1, 2, 3, 2**63 + 1], dtype=np.uint64))
    with pytest.raises(DataError, match="is a folder, not an npz file"):
        load_dataset(f"npz:{tmp_path}", split="test")
    with pytest.raises(DataError, match="is a file, not an image folder"):
        load_dataset(f"folder:{tmp_path / 'd.npz'}", split="test")
    with pytest.raises(DataError, match=f"label {2**63 + 1} in 'y' is beyond any class index"):
        load_dataset(f"npz:{tmp_path / 'u.npz'}", split="test")


def test_ids_that_do_not_match_the_labels_are_counted_right(tmp_path: Path):
    x, y = _digits(16)
    np.savez(tmp_path / "d.npz", x=x, y=y, ids=np.array([f"i{k}" for k in range(10)]))
    with pytest.raises(DataError, match="10 ids and 16 labels differ"):
        load_dataset(f"npz:{tmp_path / 'd.npz'}", split="test")
