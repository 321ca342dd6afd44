"""Hostile and unusual data, third probe (found by feeding odd files to ``evaluate`` / ``load_dataset``):

1. ``folder:``: a sliver image (1 x 20,000 pixels) was resized whole before the centre crop (at 224x224 a 2 KB
   PNG of 1 x 1,000,000 pixels asked for 65 G pixels: MemoryError, exit 4); macOS ``._NAME.png`` files,
   ``.DS_Store`` and hidden folders stopped the run; a pipe named ``x.png`` blocked it forever; a class folder
   linking back to the data held every image again; a folder that is no class of the model was not named in
   the refusal; folder names in another Unicode form (macOS NFD) swapped labels; split folders without the
   split asked for were read as two classes; a manifest nested 100,000 deep crashed and a non-string
   "dataset" was taken as a name; 16-bit PNGs holding 8-bit values and EXIF-turned photos were read
   silently (now a warning each).
2. ``npz:``: a compressed member with megabytes after its array, or one that inflates a thousandfold, was
   inflated onto the disk before anything was checked (a 2 MB file wrote 2 GB); images were inflated before
   their count was compared with the labels'; encrypted members, unknown zip methods and broken LZMA streams
   crashed (exit 4); a label of 10**9 built 10**9 class names first (MemoryError); float64 pixels beyond
   float32 were called "NaN or infinite"; ``ids``/``classes``/``dataset`` saved as bytes became ``"b'cat'"``
   (so class names never matched the model's); a shape that fits both channel orders and float images
   divided by 255 twice were read silently (now a warning each).
3. Pre-rendered corruption sets (``precomputed:``): float or channels-first ``<corruption>.npy`` files and
   float or negative labels gave wrong accuracies with exit 0; short, object or non-NumPy files and odd
   manifests errored the check (exit 3) with a Python message; ImageNet-C ``._x.JPEG`` files crashed it.
"""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from numpy.lib import format as npformat

from robustlab.data import load_dataset
from robustlab.errors import DataError


def _digits(n: int = 20) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images[:n] / 16 * 255).round().astype(np.uint8), d.target[:n].astype(np.int64)


def _folder(root: Path, n: int = 20) -> Path:
    from PIL import Image

    x, y = _digits(n)
    for i, (a, c) in enumerate(zip(x, y.tolist())):
        (root / str(c)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(a, "L").save(root / str(c) / f"{i:03d}.png")
    return root


# -- 1. folder: ---------------------------------------------------------------------------------
def test_a_sliver_image_is_not_resized_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    root = _folder(tmp_path / "f")
    rng = np.random.default_rng(0)
    sliver = rng.integers(0, 256, (2, 20000), dtype=np.uint8)
    Image.fromarray(sliver, "L").save(root / "0" / "sliver.png")
    asked: list[int] = []
    resize = Image.Image.resize

    def spy(self: Image.Image, size: tuple[int, int], *a: object, **k: object) -> Image.Image:
        asked.append(size[0] * size[1])
        return resize(self, size, *a, **k)  # type: ignore[arg-type]

    monkeypatch.setattr(Image.Image, "resize", spy)
    ds = load_dataset(f"folder:{root}", input_shape=(1, 32, 32))
    i = ds.ids.index("0/sliver.png")
    got = ds.images([i])[0, 0].numpy()
    assert max(asked) <= 64 * 37 * 37, max(asked)  # the full resize would be 37 x 370,000 pixels
    monkeypatch.setattr(Image.Image, "resize", resize)
    full = Image.fromarray(sliver, "L").resize((370000, 37), Image.Resampling.BILINEAR)  # the protocol, resized whole
    left = int(round((370000 - 32) / 2.0))
    want = np.asarray(full.crop((left, 2, left + 32, 34)), dtype=np.float32) / 255
    assert np.abs(got - want).max() <= 1 / 255 + 1e-6


def test_hidden_files_and_folders_are_skipped(tmp_path: Path) -> None:
    from PIL import Image

    root = _folder(tmp_path / "f")
    (root / "0" / "._000.png").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")  # AppleDouble
    (root / "0" / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "0" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (root / ".ipynb_checkpoints").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / ".ipynb_checkpoints" / "x.png")
    (root / "1" / ".cache").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "1" / ".cache" / "y.png")
    ds = load_dataset(f"folder:{root}", input_shape=(1, 8, 8))
    assert len(ds) == 20 and ds.classes == [str(c) for c in range(10)]
    assert all(not part.startswith(".") for i in ds.ids for part in i.split("/"))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs named pipes")
def test_a_pipe_named_like_an_image_is_refused_not_waited_on(tmp_path: Path) -> None:
    root = _folder(tmp_path / "f", n=10)
    os.mkfifo(root / "0" / "pipe.png")
    code = f"from robustlab.data import load_dataset\nload_dataset({f'folder:{root}'!r}, input_shape=(1, 8, 8))"
    try:  # in a child process: before the fix it blocks forever on the pipe
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env={**os.environ, "OMP_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired:
        pytest.fail("reading a folder holding a named pipe hung")
    assert "is not a regular file" in r.stderr and "pipe.png" in r.stderr, r.stderr[-500:]


def test_a_folder_that_is_no_class_of_the_model_is_named(tmp_path: Path) -> None:
    root = _folder(tmp_path / "f", n=30)
    (root / "extra").mkdir()
    ds = load_dataset(f"folder:{root}", input_shape=(1, 8, 8))
    with pytest.raises(DataError, match="'extra' is not"):
        ds.match_classes([str(c) for c in range(10)], 10)


def test_16_bit_pngs_holding_8_bit_values_are_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from PIL import Image

    x, y = _digits(10)
    for i, (a, c) in enumerate(zip(x, y.tolist())):
        (tmp_path / str(c)).mkdir(exist_ok=True)
        Image.fromarray(a.astype(np.uint16)).save(tmp_path / str(c) / f"{i}.png")  # mode I;16 with values 0..255
    with caplog.at_level(logging.WARNING, logger="robustlab.data.images"):
        ds = load_dataset(f"folder:{tmp_path}", input_shape=(1, 8, 8))
        assert float(ds.images().max()) <= 255 / 65535 + 1e-6  # still the documented protocol
    assert "reaches only" in caplog.text and "save them as 8-bit images" in caplog.text


def test_exif_turned_photos_are_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from PIL import Image

    root = _folder(tmp_path / "f", n=10)
    im = Image.fromarray(np.zeros((8, 8), np.uint8))
    exif = im.getexif()
    exif[0x0112] = 6  # "turn 90 degrees clockwise to view"
    im.save(root / "0" / "phone.jpg", exif=exif)
    with caplog.at_level(logging.WARNING, logger="robustlab.data.images"):
        load_dataset(f"folder:{root}", input_shape=(1, 8, 8))
    assert "EXIF orientation" in caplog.text and "phone.jpg" in caplog.text


# -- 2. npz: ------------------------------------------------------------------------------------
def _npz_with_x_member(path: Path, header_shape: tuple[int, ...], payload: bytes, extra: int = 0, labels: int = 16) -> Path:
    """An npz whose compressed x.npy is a .npy header for ``header_shape`` uint8, ``payload`` and ``extra`` zero bytes."""
    _, y = _digits(16)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        with z.open("x.npy", "w", force_zip64=True) as f:
            h = io.BytesIO()
            npformat.write_array_header_1_0(h, {"descr": "|u1", "fortran_order": False, "shape": header_shape})
            f.write(h.getvalue() + payload)
            for _ in range(extra >> 20):
                f.write(bytes(1 << 20))
        b = io.BytesIO()
        np.save(b, np.resize(y, labels))
        z.writestr("y.npy", b.getvalue())
    return path


def test_a_member_with_megabytes_after_its_array_is_refused_uninflated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    x, _ = _digits(16)
    p = _npz_with_x_member(tmp_path / "b.npz", (16, 8, 8), x.tobytes(), extra=8 << 20)  # 8 MB of zeros: a 10 KB file
    assert p.stat().st_size < 100_000
    copied: list[str] = []
    copy = shutil.copyfileobj
    monkeypatch.setattr(shutil, "copyfileobj", lambda src, *a: copied.append(getattr(src, "name", "?")) or copy(src, *a))
    with pytest.raises(DataError, match="zip bomb"):
        load_dataset(f"npz:{p}")
    assert "x.npy" not in copied, copied


def test_a_thousandfold_member_is_refused_as_a_zip_bomb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import robustlab.data.npz as npz

    monkeypatch.setattr(npz, "_BOMB_BYTES", 1 << 20)  # 1 GiB in real use
    p = _npz_with_x_member(tmp_path / "b.npz", (65536, 8, 8), bytes(65536 * 64), labels=65536)  # 4 MiB of black images, ~4 KB deflated
    with pytest.raises(DataError, match="as a zip bomb does.*numpy.savez"):
        load_dataset(f"npz:{p}")


def test_a_member_larger_than_the_free_temp_space_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    x, y = _digits(16)
    np.savez_compressed(tmp_path / "d.npz", x=x, y=y)
    monkeypatch.setattr(shutil, "disk_usage", lambda _p: shutil._ntuple_diskusage(10, 10, 0))  # type: ignore[attr-defined]
    with pytest.raises(DataError, match="GiB free; set TMPDIR"):
        load_dataset(f"npz:{tmp_path / 'd.npz'}")


def test_the_image_count_is_checked_before_the_images_are_inflated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import robustlab.data.npz as npz

    x, _ = _digits(16)
    p = _npz_with_x_member(tmp_path / "c.npz", (4096, 8, 8), bytes(4096 * 64))  # 4,096 images, 16 labels
    opened: list[str] = []
    real = npz.open_member
    monkeypatch.setattr(npz, "open_member", lambda path, name: opened.append(name) or real(path, name))
    with pytest.raises(DataError, match="16 labels and 4096 images differ"):
        load_dataset(f"npz:{p}")
    assert "x" not in opened


def test_float64_pixels_beyond_float32_are_out_of_range_not_nan(tmp_path: Path) -> None:
    _, y = _digits(4)
    np.savez(tmp_path / "d.npz", x=np.full((4, 8, 8), 1e300), y=y)
    with pytest.raises(DataError, match=r"values in \[1e\+300, 1e\+300\]"):
        load_dataset(f"npz:{tmp_path / 'd.npz'}")


def test_names_saved_as_bytes_are_text(tmp_path: Path) -> None:
    x, _ = _digits(4)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 0, 1]), ids=np.array([b"a0", b"a1", b"a2", b"a3"]),
             classes=np.array([b"dog", b"cat"]), dataset=np.array(b"digits"))
    ds = load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert ds.ids == ["a0", "a1", "a2", "a3"] and ds.classes == ["dog", "cat"] and ds.extra["dataset"] == "digits"
    assert ds.match_classes(["cat", "dog"], 2).y.tolist() == [1, 0, 1, 0]  # by name, not by position


def test_a_shape_that_fits_both_channel_orders_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _, y = _digits(4)
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 3, 3, 3), np.uint8) + 200, y=y)
    with caplog.at_level(logging.WARNING, logger="robustlab.data.npz"):
        assert load_dataset(f"npz:{tmp_path / 'd.npz'}").images().shape == (4, 3, 3, 3)
    assert "fits both (N, C, H, W) and (N, H, W, C)" in caplog.text


def test_float_images_divided_by_255_twice_are_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    x, y = _digits(8)
    np.savez(tmp_path / "d.npz", x=x.astype(np.float32) / 255 / 255, y=y)
    with caplog.at_level(logging.WARNING, logger="robustlab.data.npz"):
        load_dataset(f"npz:{tmp_path / 'd.npz'}")
    assert "float images reach only 0.003922" in caplog.text


def test_a_zip_bomb_is_a_one_line_exit_2(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from robustlab.cli import main

    x, _ = _digits(16)
    p = _npz_with_x_member(tmp_path / "b.npz", (16, 8, 8), x.tobytes(), extra=4 << 20)
    r = CliRunner().invoke(main, ["evaluate", "--model", "zoo:digits-cnn", "--data", f"npz:{p}", "--threads", "1", "--no-mlflow", "--quiet",
                                  "--no-report", "--out", str(tmp_path / "out")])
    assert r.exit_code == 2, r.output
    assert "zip bomb" in r.output and "Traceback" not in r.output


def _patch_members(path: Path, at: int, value: bytes, local: bytes = b"PK\x03\x04", central: bytes = b"PK\x01\x02", central_at: int = 0) -> Path:
    """Overwrite bytes ``at`` of every local header (and ``central_at`` of every central header) with ``value``."""
    raw = bytearray(path.read_bytes())
    for sig, off in ((local, at), (central, central_at)):
        i = raw.find(sig)
        while i >= 0:
            raw[i + off:i + off + len(value)] = value
            i = raw.find(sig, i + 4)
    path.write_bytes(bytes(raw))
    return path


def _encrypted(p: Path) -> Path:
    raw = bytearray(p.read_bytes())
    for sig, off in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # general purpose flag bit 0: encrypted
        i = raw.find(sig)
        while i >= 0:
            raw[i + off] |= 1
            i = raw.find(sig, i + 4)
    p.write_bytes(bytes(raw))
    return p


def _corrupt_lzma(p: Path) -> Path:
    x, y = _digits(8)
    with zipfile.ZipFile(p, "w", compression=zipfile.ZIP_LZMA) as z:
        for k, v in {"x": x, "y": y}.items():
            b = io.BytesIO()
            np.save(b, v)
            z.writestr(f"{k}.npy", b.getvalue())
    raw = bytearray(p.read_bytes())
    i = raw.find(b"x.npy") + 60
    raw[i:i + 40] = b"\x07" * 40
    p.write_bytes(bytes(raw))
    return p


@pytest.mark.parametrize("damage, says", [
    (_encrypted, "is encrypted"),
    (lambda p: _patch_members(p, 8, b"\x63\x00", central_at=10), "zip method 99, which Python cannot read"),  # AES (WinZip)
    (_corrupt_lzma, "is damaged"),
])
def test_encrypted_unreadable_and_broken_lzma_members_are_refused_not_crashed_on(tmp_path: Path, damage, says) -> None:  # type: ignore[no-untyped-def]
    x, y = _digits(8)
    np.savez_compressed(tmp_path / "d.npz", x=x, y=y)
    p = damage(tmp_path / "d.npz")
    with pytest.raises(DataError, match=says):
        load_dataset(f"npz:{p}")


def test_folder_names_spelt_in_another_unicode_form_match_the_class_names(tmp_path: Path) -> None:
    """macOS writes "é" in file names as "e" + a combining accent (NFD); the model's names are usually NFC. By
    position the two accented folders sorted the other way round and got each other's labels."""
    import unicodedata

    from PIL import Image

    names = ["a", "ü", "é"]  # the model's class names (NFC), in label order
    for k, c in enumerate(names):
        d = tmp_path / unicodedata.normalize("NFD", c)
        d.mkdir()
        Image.fromarray(np.full((8, 8), 10 * k, np.uint8)).save(d / "x.png")
    ds = load_dataset(f"folder:{tmp_path}", input_shape=(1, 8, 8)).match_classes(names, 3)
    by_id = {unicodedata.normalize("NFC", i.split("/")[0]): int(label) for i, label in zip(ds.ids, ds.y.tolist())}
    assert by_id == {"a": 0, "ü": 1, "é": 2}
    assert ds.classes == names


@pytest.mark.parametrize("manifest, says", [
    ("[" * 100_000 + "]" * 100_000, "is not a JSON object"),  # RecursionError: exit 4 before
    ('{"dataset": ["cifar10"]}', "must be a name such as"),  # read as the name "['cifar10']" before
    ('{"dataset": 10}', "must be a name such as"),
])
def test_a_manifest_that_names_no_data_set_is_refused_in_one_line(tmp_path: Path, manifest: str, says: str) -> None:
    root = _folder(tmp_path / "f", n=10)
    (root / "manifest.json").write_text(manifest)
    with pytest.raises(DataError, match=says):
        load_dataset(f"folder:{root}", input_shape=(1, 8, 8))


def test_split_folders_without_the_split_asked_for_are_not_read_as_classes(tmp_path: Path) -> None:
    """data/{train,test}/<class>: the val split (the OOD and uncertainty checks ask for it to tune on) was the
    whole tree, with 'test' and 'train' as its two classes, the evaluation's own test images included."""
    from PIL import Image

    for split in ("train", "test"):
        for c in ("cat", "dog"):
            (tmp_path / split / c).mkdir(parents=True)
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / split / c / "x.png")
    assert load_dataset(f"folder:{tmp_path}", split="test", input_shape=(1, 8, 8)).classes == ["cat", "dog"]
    with pytest.raises(DataError, match=r"holds split folders \(test, train\) but no val/ folder"):
        load_dataset(f"folder:{tmp_path}", split="val", input_shape=(1, 8, 8))
    for c in ("apple", "train"):  # a class folder that happens to be called train (CIFAR-100 has one) is still a class
        (tmp_path / "c100" / c).mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "c100" / c / "x.png")
    assert load_dataset(f"folder:{tmp_path / 'c100'}", split="val", input_shape=(1, 8, 8)).classes == ["apple", "train"]


def test_a_label_of_a_billion_is_refused_before_a_billion_class_names_are_made(tmp_path: Path) -> None:
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 8, 8), np.uint8), y=np.array([0, 10**9]))
    with pytest.raises(DataError, match="label 1000000000 in 'y' is beyond any class count"):  # MemoryError (or the OOM killer) before
        load_dataset(f"npz:{tmp_path / 'd.npz'}")


def test_a_class_folder_linking_back_to_the_data_is_refused(tmp_path: Path) -> None:
    root = _folder(tmp_path / "f", n=10)
    os.symlink(".", root / "zz")  # read as an 11th class holding every image again
    with pytest.raises(DataError, match="class folder zz links back to"):
        load_dataset(f"folder:{root}", input_shape=(1, 8, 8))


# -- 3. pre-rendered corruption sets (the corruption check's precomputed: folder) ----------------------
def _cifar_c(root: Path, **damage: object) -> Path:
    """A CIFAR-C folder of 2 images x 5 severities (gaussian_noise.npy, labels.npy), with files replaced by ``damage``."""
    import json

    rng = np.random.default_rng(0)
    root.mkdir()
    files: dict[str, object] = {"labels.npy": np.array([3, 7] * 5, np.uint8), "gaussian_noise.npy": rng.integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)}
    files.update({k.replace("__", "."): v for k, v in damage.items()})
    for name, v in files.items():
        if isinstance(v, np.ndarray):
            np.save(root / name, v, allow_pickle=v.dtype.hasobject)
        else:
            (root / name).write_text(v if isinstance(v, str) else json.dumps(v))
    return root


@pytest.mark.parametrize("damage, says", [
    ({"gaussian_noise__npy": np.zeros((10, 8, 8, 3), np.float32) + 0.5}, "holds float32"),  # read as 0..255: nearly black, exit 0
    ({"gaussian_noise__npy": np.zeros((10, 3, 8, 8), np.uint8)}, r"shape \(10, 3, 8, 8\)"),  # channels first: other images, exit 0
    ({"gaussian_noise__npy": np.zeros((4, 8, 8, 3), np.uint8)}, "one per label of labels.npy"),  # IndexError mid-check (exit 3)
    ({"gaussian_noise__npy": np.array([None] * 10, dtype=object)}, "not a NumPy array of numbers"),
    ({"labels__npy": np.array([3.5, 7.5] * 5)}, "holds float64"),  # truncated to 3, 7 silently
    ({"labels__npy": np.array([-1, 7] * 5)}, "has the label -1"),  # never correct: accuracy 0, exit 0
    ({"labels__npy": np.zeros((10, 2), np.int64)}, r"shape \(10, 2\)"),
    ({"labels__npy": "not numpy"}, "not a NumPy array of numbers"),  # numpy's message suggested allow_pickle=True
    ({"manifest__json": "[" * 100_000 + "]" * 100_000}, "is not readable JSON"),  # RecursionError (exit 3)
    ({"manifest__json": {"n": "two"}}, "not a robustlab corrupt manifest"),  # ValueError in int() (exit 3)
    ({"manifest__json": [1, 2]}, "not a robustlab corrupt manifest"),  # AttributeError (exit 3)
])
def test_a_damaged_cifar_c_folder_is_refused_when_opened(tmp_path: Path, damage: dict, says: str) -> None:
    from robustlab.corruptions.precomputed import open_precomputed

    root = _cifar_c(tmp_path / "c", **damage)
    with pytest.raises(DataError, match=says):
        open_precomputed(root, ["gaussian_noise"])


def test_imagenet_c_skips_hidden_files_and_names_an_unreadable_image(tmp_path: Path) -> None:
    from PIL import Image

    from robustlab.corruptions.precomputed import open_precomputed

    d = tmp_path / "fog" / "1" / "n01"
    d.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(d / "a.png")
    (d / "._a.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    (tmp_path / "fog" / "1" / ".thumbs").mkdir()
    pre = open_precomputed(tmp_path, ["fog"])
    assert pre.count("fog", 1) == 1 and pre.images("fog", 1, [0]).shape == (1, 3, 4, 4)
    (d / "b.png").write_bytes(b"not a png")
    pre = open_precomputed(tmp_path, ["fog"])
    with pytest.raises(DataError, match="cannot read ImageNet-C image .*b.png"):
        pre.images("fog", 1, [0, 1])


def test_images_in_formats_not_read_are_named_and_pgm_is_read(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A folder half of GIFs was evaluated on the other half without a word; PGM (in torchvision's list) was skipped too."""
    from PIL import Image

    for c in ("0", "1"):
        (tmp_path / c).mkdir()
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / c / "a.png")
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / c / "b.gif")
        Image.fromarray(np.full((8, 8), 51, np.uint8)).save(tmp_path / c / "c.pgm")
    with caplog.at_level(logging.WARNING, logger="robustlab.data.images"):
        ds = load_dataset(f"folder:{tmp_path}", input_shape=(1, 8, 8))
    assert ds.ids == ["0/a.png", "0/c.pgm", "1/a.png", "1/c.pgm"]
    assert float(ds.images([1]).max()) == pytest.approx(0.2)
    assert "2 image(s) in a format robustlab does not read" in caplog.text and "b.gif" in caplog.text
