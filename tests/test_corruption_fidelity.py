"""Fidelity of the fast (torch) corruptions against the reference (imagecorruptions), per corruption
and severity, at 32x32 and 224x224, for the 13 corruptions of this module set (the six weather/blur
ones have their own tests in test_corruptions_weather.py).

Tolerances (stated, not tuned per case):
* deterministic corruptions: every pixel within one grey level (1/255, plus 1e-4 for float
  rounding) and PSNR >= 40 dB;
* random corruptions: statistics of the perturbation x_c - x (mean, mean |.|, std, fraction of
  pixels changed by more than 1.5 grey levels, mean output) agree within 5% relative + 0.002
  absolute at 32x32 (200 images) and 8% + 0.002 at 224x224 (4 images); the fast output is floored
  to 8 bits first, as the reference's uint8 conversion does. A model's accuracy on the two
  corrupted sets agrees within 0.05 (digits model, 360 images; CIFAR ResNet-18 in the slow test).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from robustlab.corruptions.engine import corrupt

DETERMINISTIC = ["brightness", "contrast", "saturate", "defocus_blur", "gaussian_blur", "zoom_blur", "pixelate", "jpeg_compression"]
RANDOM = ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "elastic_transform"]
SEVERITIES = [1, 2, 3, 4, 5]


def _natural_images(n: int, shared: Path | None) -> torch.Tensor:
    """(n, 3, 32, 32) uint8-valued images in [0, 1]: real CIFAR-10 when available, else smooth noise."""
    if shared is not None and (shared / "cifar10_test_1000.npz").is_file():
        x = np.load(shared / "cifar10_test_1000.npz")["x"][:n]
        return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0
    g = torch.Generator().manual_seed(0)
    x = F.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=(32, 32), mode="bicubic", align_corners=False)
    return (x.clamp(0, 1) * 255).round() / 255.0


@pytest.fixture(scope="module")
def images32() -> torch.Tensor:
    root = Path(__file__).resolve().parents[2] / "shared" / "data"
    return _natural_images(200, root if root.is_dir() else None)


@pytest.fixture(scope="module")
def images224(images32: torch.Tensor) -> torch.Tensor:
    x = F.interpolate(images32[:4], size=(224, 224), mode="bilinear", align_corners=False)
    return (x.clamp(0, 1) * 255).round() / 255.0


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def _assert_deterministic_match(x: torch.Tensor, name: str, sev: int) -> None:
    seeds = list(range(x.shape[0]))
    ref = corrupt(x, name, sev, seeds, backend="reference")
    fast = corrupt(x, name, sev, seeds, backend="fast")
    worst = float((ref - fast).abs().max()) * 255
    assert worst <= 1.0 + 1e-4 * 255, f"{name} s{sev} {tuple(x.shape)}: max difference {worst:.3f} grey levels"
    assert _psnr(ref, fast) >= 40.0


@pytest.mark.parametrize("sev", SEVERITIES)
@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_32(images32: torch.Tensor, name: str, sev: int) -> None:
    _assert_deterministic_match(images32[:16], name, sev)


@pytest.mark.parametrize("sev", SEVERITIES)
@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_224(images224: torch.Tensor, name: str, sev: int) -> None:
    _assert_deterministic_match(images224[:2], name, sev)


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_nonsquare_grey_small(images32: torch.Tensor, name: str) -> None:
    wide = (F.interpolate(images32[:3], size=(37, 53), mode="bilinear", align_corners=False) * 255).round() / 255
    _assert_deterministic_match(wide, name, 3)
    grey = (0.299 * images32[:4, :1] + 0.587 * images32[:4, 1:2] + 0.114 * images32[:4, 2:3])
    grey = (grey * 255).round() / 255
    _assert_deterministic_match(grey, name, 4)
    small = (F.avg_pool2d(grey, 4) * 255).round() / 255  # 8x8 grey, like the digits data
    _assert_deterministic_match(small, name, 2)


def _stats(xc: torch.Tensor, x: torch.Tensor) -> dict[str, float]:
    p = xc - x
    return {
        "mean": float(p.mean()),
        "mean_abs": float(p.abs().mean()),
        "std": float(p.std()),
        "changed": float((p.abs() > 1.5 / 255).float().mean()),
        "output_mean": float(xc.mean()),
    }


def _assert_same_distribution(x: torch.Tensor, name: str, sev: int, rel: float) -> None:
    seeds = list(range(x.shape[0]))
    ref = corrupt(x, name, sev, seeds, backend="reference")
    fast = corrupt(x, name, sev, [s + 1_000_003 for s in seeds], backend="fast")
    fast = torch.floor(fast * 255 + 1e-4) / 255  # the reference's uint8 conversion floors
    a, b = _stats(ref, x), _stats(fast, x)
    for k in a:
        assert abs(a[k] - b[k]) <= rel * max(abs(a[k]), abs(b[k])) + 0.002, f"{name} s{sev} {tuple(x.shape)} {k}: reference {a[k]:.5f} vs fast {b[k]:.5f}"


@pytest.mark.parametrize("sev", [1, 3, 5])
@pytest.mark.parametrize("name", RANDOM)
def test_random_statistics_32(images32: torch.Tensor, name: str, sev: int) -> None:
    _assert_same_distribution(images32, name, sev, rel=0.05)


@pytest.mark.parametrize("sev", [2, 4])
@pytest.mark.parametrize("name", RANDOM)
def test_random_statistics_224(images224: torch.Tensor, name: str, sev: int) -> None:
    _assert_same_distribution(images224, name, sev, rel=0.08)


def test_statistics_test_can_fail(images32: torch.Tensor) -> None:
    """The distribution comparison detects a one-severity mismatch (guards against a vacuous test)."""
    seeds = list(range(images32.shape[0]))
    ref = _stats(corrupt(images32, "gaussian_noise", 3, seeds, backend="reference"), images32)
    wrong = _stats(torch.floor(corrupt(images32, "gaussian_noise", 2, seeds) * 255 + 1e-4) / 255, images32)
    assert abs(ref["std"] - wrong["std"]) > 0.05 * ref["std"] + 0.002


def test_elastic_warp_matches_map_coordinates() -> None:
    """Given the same displacement fields, the warp equals scipy's map_coordinates(order=1, mode='reflect')."""
    from scipy.ndimage import map_coordinates

    from robustlab.corruptions.fast.elastic_transform import elastic_warp

    rng = np.random.default_rng(0)
    for h, w in [(32, 32), (37, 53)]:
        img = rng.random((h, w, 3)).astype(np.float32)
        dx = (rng.normal(size=(h, w)) * 3).astype(np.float32)
        dy = (rng.normal(size=(h, w)) * 3).astype(np.float32)
        xx, yy, zz = np.meshgrid(np.arange(w), np.arange(h), np.arange(3))
        idx = (np.reshape(yy + dy[..., None], (-1, 1)), np.reshape(xx + dx[..., None], (-1, 1)), np.reshape(zz, (-1, 1)))
        ref = map_coordinates(img, idx, order=1, mode="reflect").reshape(img.shape)
        out = elastic_warp(torch.from_numpy(img).permute(2, 0, 1)[None], torch.from_numpy(dx)[None], torch.from_numpy(dy)[None])
        np.testing.assert_allclose(out[0].permute(1, 2, 0).numpy(), ref, atol=1e-4)


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def _correct(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return (model(x).argmax(1) == y).float().numpy()


@pytest.mark.parametrize("name", RANDOM)
def test_model_accuracy_agrees_digits(digits_model, digits_data, name: str) -> None:  # type: ignore[no-untyped-def]
    """Random corruptions at full strength make each image's outcome a coin flip, so one draw per
    backend differs by sampling noise alone (sd about 0.035 on 360 images). Each backend draws k
    times; the accuracies must agree within 4 standard errors of their difference (estimated from the
    per-image success rates), plus 0.01: a backend whose strength is off moves every image the same
    way and fails by many standard errors."""
    x, y = digits_data.images(), digits_data.y
    n, k = x.shape[0], 4
    for sev in (3, 5):
        ref = np.stack([_correct(digits_model, corrupt(x, name, sev, [s + 1000 * r for s in range(n)], backend="reference"), y) for r in range(k)])
        fast = np.stack([_correct(digits_model, corrupt(x, name, sev, [s + 1000 * r + 77 for s in range(n)]), y) for r in range(k)])
        p = (ref.mean(0) + fast.mean(0)) / 2  # per-image success rate, pooled
        se = float(np.sqrt((2 * p * (1 - p) / k).sum()) / n)
        a, b = float(ref.mean()), float(fast.mean())
        assert abs(a - b) <= 4 * se + 0.01, f"{name} s{sev}: accuracy reference {a:.3f} vs fast {b:.3f} (se {se:.4f})"


@pytest.mark.slow
@pytest.mark.parametrize("name", RANDOM + DETERMINISTIC)
def test_model_accuracy_agrees_cifar(cifar_model, images32: torch.Tensor, cifar_npz: Path, name: str) -> None:  # type: ignore[no-untyped-def]
    # Deterministic corruptions give (nearly) the same pixels on both sides, so 100 images show any
    # disagreement; random ones draw their own noise per side and need 200 for the 0.05 tolerance.
    n = 200 if name in RANDOM else 100
    x, y = images32[:n], torch.from_numpy(np.load(cifar_npz)["y"][:n])
    seeds = list(range(n))
    for sev in (3, 5):  # (severity 1 changes the least; the pixel-level tests cover all five)
        a = _accuracy(cifar_model, corrupt(x, name, sev, seeds, backend="reference"), y)
        b = _accuracy(cifar_model, corrupt(x, name, sev, [s + 77 for s in seeds]), y)
        assert abs(a - b) <= 0.05, f"{name} s{sev}: accuracy reference {a:.3f} vs fast {b:.3f}"
