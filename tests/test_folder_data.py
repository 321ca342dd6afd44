"""``folder:`` data: one decision per folder for size, channels and value range.

1. Images of one size keep their native size unless the model asks for another; otherwise the
   ImageNet protocol (resize, centre crop) to the model's size, 224x224 only when nothing gives one.
   What was done is in the description and the scorecard, and in ``content_sha256``.
2. 16-bit, 32-bit integer and float images are scaled by their mode's range, not clipped to 8 bits;
   alpha is dropped and palettes expanded.
3. A folder mixing grey and colour images is converted to one channel count for every image.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from robustlab.cli import main
from robustlab.data import load_dataset
from robustlab.errors import DataError

RUN = ["--threads", "1", "--no-mlflow", "--quiet", "--no-report", "--seed", "0"]
CLEAN = str(Path(__file__).parent / "suites" / "clean.yaml")
N = 40


def _digits(n: int = N) -> tuple[np.ndarray, np.ndarray]:
    """The first ``n`` test digits, (n, 8, 8) float in [0, 1] (multiples of 1/16), and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.float64) / 16.0
    return x[:n], d.target[:n]


def _write(root: Path, save) -> Path:
    """``save(digit (8, 8) float, index, path without suffix)`` for each digit, in ``root/<class>/<i>``."""
    x, y = _digits()
    for i, (a, c) in enumerate(zip(x, y.tolist())):
        d = root / str(c)
        d.mkdir(parents=True, exist_ok=True)
        save(a, i, d / f"{i:03d}")
    return root


def _u8(a: np.ndarray) -> np.ndarray:
    return (a * 255).round().astype(np.uint8)


def _evaluate(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, ["evaluate", "--suite", CLEAN, *args, *RUN])
    return r.exit_code, r.output


def _card(out: Path) -> dict:
    return json.loads((out / "scorecard.json").read_text())


# -- 1. size -----------------------------------------------------------------------------------------
def test_images_of_one_size_keep_their_native_size(tmp_path: Path) -> None:
    """72x144 RGB images (over 64 px) are not resized to a 224 crop when nothing asks for another size."""
    from PIL import Image

    def wide(a: np.ndarray, i: int, p: Path) -> None:
        img = np.zeros((72, 144), np.uint8)
        img[:, :72] = _u8(np.kron(a, np.ones((9, 9))))
        Image.fromarray(np.stack([img] * 3, -1)).save(p.with_suffix(".png"))

    root = _write(tmp_path / "wide", wide)
    ds = load_dataset(f"folder:{root}")
    x = ds.images([0, 1])
    assert x.shape == (2, 3, 72, 144)
    src = np.asarray(Image.open(root / ds.ids[1]), dtype=np.float32).transpose(2, 0, 1) / 255
    assert torch.equal(x[1], torch.from_numpy(src))
    assert ds.preprocessing == "native size 72x144, RGB (3 channels)" and ds.preprocessing in ds.description
    # the model's own size, when it is the images' size, keeps them as they are
    same = load_dataset(f"folder:{root}", input_shape=(3, 72, 144))
    assert torch.equal(same.images([1]), x[1:2]) and same.preprocessing == ds.preprocessing


def test_the_models_input_size_gets_the_imagenet_protocol(tmp_path: Path) -> None:
    """96x96 digits for zoo:digits-cnn (1x8x8): resized (shorter side to round(8/0.875) = 9) and centre-cropped
    to 8x8, evaluated (exit 0), and the protocol is in the scorecard. Before: a 224x224 crop, refused."""
    from PIL import Image

    root = _write(tmp_path / "big", lambda a, i, p: Image.fromarray(_u8(np.kron(a, np.ones((12, 12))))).convert("RGB").save(p.with_suffix(".png")))
    code, out = _evaluate("--model", "zoo:digits-cnn", "--data", f"folder:{root}", "--dataset", "digits", "--out", str(tmp_path / "o"))
    assert code == 0, out
    card = _card(tmp_path / "o")
    how = card["data"]["preprocessing"]
    assert how.startswith("ImageNet protocol to 8x8 (the model's input size)") and "shorter side resized to 9" in how and "grey (1 channel)" in how
    ds = load_dataset(f"folder:{root}", input_shape=(1, 8, 8))
    assert card["data"]["content_sha256"] == ds.content_sha256()
    assert card["checks"][0]["metrics"]["clean/accuracy"] >= 0.85  # the digits survive the 96 -> 9 -> 8 protocol


def test_another_size_asked_by_the_model(tmp_path: Path) -> None:
    """96x96 files for a 3x64x64 model are resized to 64x64 by the protocol, non-square targets too."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    assert load_dataset(f"folder:{tmp_path}", input_shape=(3, 96, 96)).images([0]).shape == (1, 3, 96, 96)
    assert load_dataset(f"folder:{tmp_path}", input_shape=(3, 64, 64)).images([0]).shape == (1, 3, 64, 64)
    wide = load_dataset(f"folder:{tmp_path}", input_shape=(3, 32, 48))
    assert wide.images([0, 3]).shape == (2, 3, 32, 48) and "resized to cover 37x55" in wide.preprocessing


def test_varied_sizes_get_the_protocol_to_the_model_size_else_224(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(1)
    for c, sizes in (("a", [(70, 90), (100, 80)]), ("b", [(300, 200)])):
        (tmp_path / c).mkdir()
        for i, (h, w) in enumerate(sizes):
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / c / f"{i}.jpg")
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.images().shape == (3, 3, 224, 224)
    assert "ImageNet protocol to 224x224" in ds.preprocessing and "shorter side resized to 256" in ds.preprocessing and "default" in ds.preprocessing
    assert load_dataset(f"folder:{tmp_path}", input_shape=(3, 32, 32)).images().shape == (3, 3, 32, 32)


def test_resize_crop_equals_torchvision(tmp_path: Path) -> None:
    """The protocol to a square target S is torchvision's CenterCrop(S)(Resize(round(S / 0.875))(image))."""
    from PIL import Image
    from torchvision import transforms as T

    rng = np.random.default_rng(2)
    shapes = [(375, 500), (500, 333), (64, 64), (41, 97)]
    for i, (h, w) in enumerate(shapes):
        (tmp_path / "c").mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(tmp_path / "c" / f"{i}.png")
    for s in (224, 32):
        ds = load_dataset(f"folder:{tmp_path}", input_shape=(3, s, s))
        ref = T.Compose([T.Resize(round(s / 0.875)), T.CenterCrop(s), T.ToTensor()])
        want = torch.stack([ref(Image.open(tmp_path / ds.ids[i]).convert("RGB")) for i in range(len(ds))])
        assert torch.equal(ds.images(), want), s


def test_content_sha256_changes_with_the_protocol(tmp_path: Path) -> None:
    """The same files decoded at another size or channel count hash differently (the resume fingerprint
    and data.content_sha256 use it), so stored results at another size are never reused."""
    from PIL import Image

    root = _write(tmp_path / "f", lambda a, i, p: Image.fromarray(_u8(np.kron(a, np.ones((9, 9))))).save(p.with_suffix(".png")))
    native = load_dataset(f"folder:{root}")
    at8 = load_dataset(f"folder:{root}", input_shape=(1, 8, 8))
    at16 = load_dataset(f"folder:{root}", input_shape=(1, 16, 16))
    rgb = load_dataset(f"folder:{root}", input_shape=(3, 72, 72))
    hashes = {d.content_sha256() for d in (native, at8, at16, rgb)}
    assert len(hashes) == 4
    assert load_dataset(f"folder:{root}", input_shape=(1, 8, 8)).content_sha256() == at8.content_sha256()
    assert native.limit(5).preprocessing == native.preprocessing  # subsets keep it (and so their hash)


def test_size_scan_refuses_an_unreadable_file_naming_it(tmp_path: Path) -> None:
    from PIL import Image

    root = _write(tmp_path / "f", lambda a, i, p: Image.fromarray(_u8(a)).save(p.with_suffix(".png")))
    (root / "9" / "zzz.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="zzz.png"):
        load_dataset(f"folder:{root}")


# -- 2. value range by mode ------------------------------------------------------------------------
def test_16_bit_grey_pngs_are_scaled_not_clipped(tmp_path: Path) -> None:
    """16-bit PNGs (PIL mode I;16) give the same images as the 8-bit copy and the same accuracy;
    before, convert('L') clipped every value over 255 (a binarised image)."""
    from PIL import Image

    g8 = _write(tmp_path / "g8", lambda a, i, p: Image.fromarray(_u8(a)).save(p.with_suffix(".png")))
    g16 = _write(tmp_path / "g16", lambda a, i, p: Image.fromarray((a * 65535).round().astype(np.uint16)).save(p.with_suffix(".png")))
    assert Image.open(next(g16.rglob("*.png"))).mode.startswith("I;16")
    x, _ = _digits()
    d16 = load_dataset(f"folder:{g16}")
    want = torch.from_numpy(np.stack([x[int(i.split("/")[1][:3])] for i in d16.ids]).astype(np.float32))[:, None]
    assert torch.allclose(d16.images(), want, atol=1 / 65535)
    accs = []
    for root in (g8, g16):
        code, out = _evaluate("--model", "zoo:digits-cnn", "--data", f"folder:{root}", "--dataset", "digits", "--out", str(tmp_path / f"o_{root.name}"))
        assert code == 0, out
        accs.append(_card(tmp_path / f"o_{root.name}")["checks"][0]["metrics"]["clean/accuracy"])
    assert accs[0] == accs[1] and accs[0] > 0.9


@pytest.mark.parametrize("mode", ["1", "L", "LA", "I", "F", "RGBA", "P", "CMYK"])
def test_every_mode_decodes_to_the_digit(tmp_path: Path, mode: str) -> None:
    """Each PIL mode gives the digit back in [0, 1] (alpha dropped, palette expanded, float taken as [0, 1],
    32-bit integer as 16-bit), within the mode's own quantisation."""
    from PIL import Image

    def save(a: np.ndarray, i: int, p: Path) -> None:
        if mode == "I":
            Image.fromarray((a * 65535).round().astype(np.int32), "I").save(p.with_suffix(".tif"))
        elif mode == "F":
            Image.fromarray(a.astype(np.float32), "F").save(p.with_suffix(".tif"))
        elif mode == "1":
            Image.fromarray(a >= 0.5).save(p.with_suffix(".png"))
        elif mode == "CMYK":
            Image.fromarray(_u8(a)).convert("RGB").convert("CMYK").save(p.with_suffix(".tif"))
        elif mode == "P":
            Image.fromarray(_u8(a)).convert("RGB").quantize(256).save(p.with_suffix(".png"))
        else:
            Image.fromarray(_u8(a)).convert(mode).save(p.with_suffix(".png"))

    root = _write(tmp_path / mode, save)
    assert Image.open(next(f for f in root.rglob("*") if f.is_file())).mode == mode
    ds = load_dataset(f"folder:{root}")  # no model: channels from the files' modes
    x, _ = _digits()
    want = np.stack([x[int(i.split("/")[1][:3])] for i in ds.ids]).astype(np.float32)[:, None]
    if mode == "1":
        want = (want >= 0.5).astype(np.float32)
    got = ds.images().numpy()
    assert got.shape[1] == (3 if mode in ("RGBA", "P", "CMYK") else 1)
    tol = {"I": 1 / 65535, "F": 1e-6, "1": 0, "P": 8 / 255}.get(mode, 1 / 255 + 1e-6)
    assert np.abs(got - want).max() <= tol, (mode, float(np.abs(got - want).max()))  # every channel of a colour copy


def test_out_of_range_float_and_32_bit_images_are_refused(tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "f" / "a").mkdir(parents=True)
    Image.fromarray(np.full((8, 8), 3.0, np.float32), "F").save(tmp_path / "f" / "a" / "x.tif")
    with pytest.raises(DataError, match=r"float image .* must be in \[0, 1\]"):
        load_dataset(f"folder:{tmp_path / 'f'}").images()
    (tmp_path / "i" / "a").mkdir(parents=True)
    Image.fromarray(np.full((8, 8), 100000, np.int32), "I").save(tmp_path / "i" / "a" / "x.tif")
    with pytest.raises(DataError, match="0..65535"):
        load_dataset(f"folder:{tmp_path / 'i'}").images()


# -- 3. mixed colour modes ---------------------------------------------------------------------------
def _mixed(root: Path) -> Path:
    """Digits as PNGs, every other one RGB, the first file of the first class folder RGB."""
    from PIL import Image

    return _write(root, lambda a, i, p: (Image.fromarray(_u8(a)).convert("RGB") if i % 2 == 0 else Image.fromarray(_u8(a))).save(p.with_suffix(".png")))


def test_mixed_grey_and_rgb_folder_for_a_grey_model(tmp_path: Path) -> None:
    """Before, the first image (RGB) decided RGB for every image: a channel error for the grey model."""
    from PIL import Image

    root = _mixed(tmp_path / "mixed")
    ds = load_dataset(f"folder:{root}")
    assert Image.open(root / ds.ids[0]).mode == "RGB" and {Image.open(root / i).mode for i in ds.ids} == {"L", "RGB"}
    grey = _write(tmp_path / "grey", lambda a, i, p: Image.fromarray(_u8(a)).save(p.with_suffix(".png")))
    accs = []
    for name, r in (("mixed", root), ("grey", grey)):
        code, out = _evaluate("--model", "zoo:digits-cnn", "--data", f"folder:{r}", "--dataset", "digits", "--out", str(tmp_path / f"o_{name}"))
        assert code == 0, out
        card = _card(tmp_path / f"o_{name}")
        assert card["data"]["preprocessing"] == "native size 8x8, grey (1 channel)"
        accs.append(card["checks"][0]["metrics"]["clean/accuracy"])
    assert accs[0] == accs[1]


def test_mixed_folder_without_a_model_shape_is_rgb_everywhere(tmp_path: Path) -> None:
    """No model channel count: 3 when any image has colour, even when the first image is grey."""
    from PIL import Image

    root = _write(tmp_path / "m", lambda a, i, p: (Image.fromarray(_u8(a)).convert("RGB") if i == N - 1 else Image.fromarray(_u8(a))).save(p.with_suffix(".png")))
    ds = load_dataset(f"folder:{root}")
    assert Image.open(root / ds.ids[0]).mode == "L"
    x = ds.images()
    assert x.shape == (N, 3, 8, 8) and ds.preprocessing.endswith("RGB (3 channels)")
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])  # grey repeated, the RGB copy of a grey digit unchanged
    grey = load_dataset(f"folder:{root}", input_shape=(1, 8, 8)).images()
    assert torch.allclose(grey[:, 0], x[:, 0], atol=1e-6)  # luma of an R=G=B image is the grey value
