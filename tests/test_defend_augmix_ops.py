"""AugMix operations and chains: shapes, ranges, per-image seeding, the excluded operations, and
agreement with PIL (the reference code's image library) on the pixel-level operations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustlab.defenses.augmix import jensen_shannon
from robustlab.defenses.augmix_ops import EXCLUDED, OPS, apply_op, augmix, sample_plan


def _images(c: int, h: int, n: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, h, h, generator=g)


def test_ops_exclude_test_corruptions() -> None:
    from robustlab.corruptions import ALL

    assert set(OPS).isdisjoint(EXCLUDED)
    assert set(OPS).isdisjoint(ALL)
    assert len(OPS) == 9


@pytest.mark.parametrize("shape", [(1, 8), (3, 32)])
@pytest.mark.parametrize("op", OPS)
def test_op_keeps_shape_and_range(shape: tuple[int, int], op: str) -> None:
    x = _images(*shape)
    out = apply_op(op, x, torch.full((x.shape[0],), 2.5), torch.ones(x.shape[0]))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert float(out.min()) >= 0 and float(out.max()) <= 1
    # autocontrast of uniform noise is ~identity, and PIL's equalize is the identity on images of
    # fewer than 256 pixels (its step is 0); every other operation must change the image
    if op not in ("autocontrast", "equalize"):
        assert not torch.allclose(out, x)


@pytest.mark.parametrize("shape", [(1, 8), (3, 32)])
def test_augmix_per_image_seeding_and_bounds(shape: tuple[int, int]) -> None:
    x = _images(*shape, n=8) * 2 - 1  # a model with bounds (-1, 1)
    seeds = list(range(100, 108))
    full = augmix(x, seeds, bounds=(-1.0, 1.0))
    part = augmix(x[3:6], seeds[3:6], bounds=(-1.0, 1.0))
    assert torch.allclose(full[3:6], part, atol=1e-6)  # batch composition does not matter
    assert float(full.min()) >= -1 - 1e-6 and float(full.max()) <= 1 + 1e-6
    other = augmix(x, [s + 1000 for s in seeds], bounds=(-1.0, 1.0))
    assert not torch.allclose(full, other)


def test_plan_distribution() -> None:
    plan = sample_plan(list(range(2000)))
    assert np.allclose(plan.weights.sum(1), 1)
    depths = (plan.ops >= 0).sum(2)
    assert set(np.unique(depths)) == {1, 2, 3}
    assert 0.45 < plan.skip.mean() < 0.55  # Beta(1, 1)
    assert abs(plan.weights[:, 0].mean() - 1 / 3) < 0.03  # Dirichlet(1, 1, 1)
    assert set(np.unique(plan.ops[plan.ops >= 0])) == set(range(len(OPS)))


def _pil(x: torch.Tensor) -> "object":
    from PIL import Image

    arr = (x.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    return Image.fromarray(arr if arr.shape[2] == 3 else arr[:, :, 0])


def _from_pil(img: "object", c: int) -> torch.Tensor:
    a = np.asarray(img).astype(np.float32) / 255
    if a.ndim == 2:
        a = a[:, :, None]
    return torch.from_numpy(a).permute(2, 0, 1)


@pytest.mark.parametrize("c", [1, 3])
def test_pixel_ops_match_pil(c: int) -> None:
    from PIL import ImageOps

    x = (_images(c, 16, n=4, seed=3) * 255).round() / 255
    level = torch.full((4,), 3.0)
    one = torch.ones(4)
    for i in range(4):
        img = _pil(x[i])
        assert torch.allclose(apply_op("equalize", x, level, one)[i], _from_pil(ImageOps.equalize(img), c), atol=1 / 255 + 1e-6)
        assert torch.allclose(apply_op("autocontrast", x, level, one)[i], _from_pil(ImageOps.autocontrast(img), c), atol=1 / 255 + 1e-6)
        # level 3: posterize keeps 4 - int(3 * 4 / 10) = 3 bits; solarize threshold 256 - int(3 * 256 / 10) = 180
        assert torch.allclose(apply_op("posterize", x, level, one)[i], _from_pil(ImageOps.posterize(img, 3), c), atol=1e-6)
        assert torch.allclose(apply_op("solarize", x, level, one)[i], _from_pil(ImageOps.solarize(img, 180), c), atol=1e-6)


def test_translate_matches_pil_on_whole_pixels() -> None:
    from PIL import Image

    x = (_images(1, 30, n=1, seed=5) * 255).round() / 255
    # level 3 on a 30-pixel image: 3 * (30 / 3) / 10 = 3 whole pixels
    out = apply_op("translate_x", x, torch.tensor([3.0]), torch.tensor([1.0]))[0]
    ref = _from_pil(_pil(x[0]).transform((30, 30), Image.AFFINE, (1, 0, 3, 0, 1, 0), resample=Image.BILINEAR), 1)
    assert torch.allclose(out, ref, atol=1 / 255 + 1e-5)


def test_jensen_shannon() -> None:
    z = torch.randn(5, 10)
    assert float(jensen_shannon(z, z, z)) == pytest.approx(0.0, abs=1e-6)
    assert float(jensen_shannon(z, z + torch.randn(5, 10), z)) > 1e-3
    # JS between two point masses and their mixture is bounded by log(3)
    a = torch.tensor([[50.0, 0, 0]])
    b = torch.tensor([[0, 50.0, 0]])
    c = torch.tensor([[0, 0, 50.0]])
    assert float(jensen_shannon(a, b, c)) == pytest.approx(float(torch.log(torch.tensor(3.0))), rel=1e-3)
