"""The fast ``cifar-c`` backend against robustlab's NumPy transcription of make_cifar_c.py (the
reference backend): deterministic corruptions within 1 grey level, random ones by perturbation
statistics; the constants are make_cifar_c.py's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from robustlab.corruptions.cifar_c.constants import CIFAR_C, const, zoom_factors
from robustlab.corruptions.engine import corrupt, corruption_seeds, to_uint8
from robustlab.corruptions.registry import ALL, FAST_CIFAR_C

DETERMINISTIC = ["brightness", "contrast", "saturate", "defocus_blur", "gaussian_blur", "zoom_blur", "pixelate", "jpeg_compression"]
RANDOM = [n for n in ALL if n not in DETERMINISTIC]


def _smooth_images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.rand(n, 3, 8, 8, generator=g), size=(32, 32), mode="bilinear", align_corners=False)
    x = x + 0.08 * torch.randn(n, 3, 32, 32, generator=g)  # some texture, as real photographs have
    return (x.clamp(0, 1) * 255).round() / 255


def _images(n: int, cifar: Path | None) -> torch.Tensor:
    if cifar is not None and cifar.is_file():
        return torch.from_numpy(np.load(cifar)["x"][:n]).permute(0, 3, 1, 2).float() / 255
    return _smooth_images(n)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    here = Path(__file__).resolve()
    cand = [p / "shared" / "data" / "cifar10_test_1000.npz" for p in (here.parents[2], here.parents[1])]
    return _images(64, next((c for c in cand if c.is_file()), None))


def _both(x: torch.Tensor, name: str, s: int) -> tuple[torch.Tensor, torch.Tensor]:
    seeds = corruption_seeds(0, name, s, [str(i) for i in range(x.shape[0])])
    fast = to_uint8(corrupt(x, name, s, seeds, protocol="cifar-c")).float()
    ref = to_uint8(corrupt(x, name, s, seeds, backend="reference", protocol="cifar-c")).float()
    return fast, ref


def test_constants_are_make_cifar_c() -> None:
    assert sorted(CIFAR_C) == sorted(ALL) and sorted(FAST_CIFAR_C.names()) == sorted(ALL)
    assert all(len(v) == 5 for v in CIFAR_C.values())
    assert [const("gaussian_noise", s) for s in range(1, 6)] == [0.04, 0.06, 0.08, 0.09, 0.10]
    assert [const("jpeg_compression", s) for s in range(1, 6)] == [80, 65, 58, 50, 40]
    assert [const("contrast", s) for s in range(1, 6)] == [0.75, 0.5, 0.4, 0.3, 0.15]
    assert [const("defocus_blur", s)[0] for s in range(1, 6)] == [0.3, 0.4, 0.5, 1.0, 1.5]
    script = [np.arange(1, 1.06, 0.01), np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.01), np.arange(1, 1.26, 0.01)]
    for s in range(1, 6):  # numpy's float arange includes the stop here (7 factors at s1), as in the script
        np.testing.assert_allclose(zoom_factors(s), script[s - 1])


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_deterministic_within_one_grey_level(name: str, images: torch.Tensor) -> None:
    x = images[:16]
    for s in (1, 3, 5):
        fast, ref = _both(x, name, s)
        assert float((fast - ref).abs().max()) <= 1.0, f"{name} s{s}: fast and reference differ by more than 1 grey level"


@pytest.mark.parametrize("name", RANDOM)
def test_random_perturbation_statistics(name: str, images: torch.Tensor) -> None:
    """Mean |y - x| of the two backends within 12% (+ 0.5 grey level) on 64 images at severities 1 and 5."""
    clean = (images * 255).round()
    for s in (1, 5):
        fast, ref = _both(images, name, s)
        mf, mr = float((fast - clean).abs().mean()), float((ref - clean).abs().mean())
        assert abs(mf - mr) <= 0.12 * mr + 0.5, f"{name} s{s}: mean |perturbation| fast {mf:.2f} vs reference {mr:.2f} grey levels"


def test_cifar_c_is_milder_than_imagenet_c(images: torch.Tensor) -> None:
    """The point of the protocol: e.g. gaussian noise at s5 is sigma .10 under cifar-c, .38 under imagenet-c."""
    x = torch.full((8, 3, 32, 32), 0.5)
    seeds = list(range(8))
    c = corrupt(x, "gaussian_noise", 5, seeds, protocol="cifar-c")
    i = corrupt(x, "gaussian_noise", 5, seeds, protocol="imagenet-c")
    assert abs(float((c - x).std()) - 0.10) < 0.005 and float((i - x).std()) > 0.3
