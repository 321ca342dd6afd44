"""AugMix augmentation operations and chains, batched in torch, sampled per image.

The operation set is the paper's ImageNet-C-safe set: autocontrast, equalize, posterize, rotate,
solarize, shear_x, shear_y, translate_x, translate_y. Brightness, contrast, color and sharpness are
left out on purpose (they overlap with the test corruptions; Hendrycks et al. 2020, Sec. 4).

Every random choice of image i (mixing weights, skip weight, chain depths, operations, magnitudes,
signs) comes from a generator seeded with ``seeds[i]`` alone, so the augmentation of an image does
not depend on the batch it is in. Images are processed in [0, 1]: :func:`augmix` maps from and back
to the model's bounds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

#: The AugMix operations, in the reference order (``augmentations.augmentations``).
OPS: tuple[str, ...] = ("autocontrast", "equalize", "posterize", "rotate", "solarize", "shear_x", "shear_y", "translate_x", "translate_y")
#: Operations of the reference's ``all_ops`` set that AugMix excludes because they overlap with
#: ImageNet-C / CIFAR-10-C test corruptions.
EXCLUDED: tuple[str, ...] = ("color", "contrast", "brightness", "sharpness")


# -- per-image sampling ---------------------------------------------------------------------------
@dataclass(frozen=True)
class AugMixPlan:
    """Sampled AugMix parameters of a batch.

    Attributes:
        weights: (N, width) Dirichlet(alpha) mixing weights of the chains.
        skip: (N,) Beta(alpha, alpha) weight m of the mixture: out = (1 - m) x + m mix.
        ops: (N, width, 3) operation index into :data:`OPS`, -1 where the chain is shorter.
        levels: (N, width, 3) magnitudes sampled uniformly in [0.1, severity].
        signs: (N, width, 3) +1 / -1 for the signed geometric operations.
    """

    weights: np.ndarray
    skip: np.ndarray
    ops: np.ndarray
    levels: np.ndarray
    signs: np.ndarray


def sample_plan(seeds: Sequence[int], *, width: int = 3, depth: int = -1, severity: float = 3.0, alpha: float = 1.0) -> AugMixPlan:
    """Draw each image's AugMix parameters from its own seed (depth -1: uniform in 1..3 per chain)."""
    n, max_depth = len(seeds), (depth if depth > 0 else 3)
    weights = np.zeros((n, width))
    skip = np.zeros(n)
    ops = np.full((n, width, max_depth), -1, dtype=np.int64)
    levels = np.zeros((n, width, max_depth))
    signs = np.ones((n, width, max_depth))
    for i, s in enumerate(seeds):
        rng = np.random.default_rng(int(s))
        weights[i] = rng.dirichlet([alpha] * width)
        skip[i] = rng.beta(alpha, alpha)
        for j in range(width):
            d = depth if depth > 0 else int(rng.integers(1, 4))
            ops[i, j, :d] = rng.integers(0, len(OPS), size=d)
            levels[i, j, :d] = rng.uniform(0.1, severity, size=d)
            signs[i, j, :d] = np.where(rng.uniform(size=d) < 0.5, -1.0, 1.0)
    return AugMixPlan(weights, skip, ops, levels, signs)


# -- operations on (n, C, H, W) in [0, 1] with per-image levels (n,) -------------------------------
def _to_uint(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round().to(torch.int64)


def autocontrast(x: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Stretch each channel to the full range (PIL ``ImageOps.autocontrast``, cutoff 0)."""
    lo = x.amin(dim=(2, 3), keepdim=True)
    hi = x.amax(dim=(2, 3), keepdim=True)
    span = hi - lo
    out = (x - lo) / span.clamp_min(1e-12)
    return torch.where(span > 1e-12, out, x)


def equalize(x: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation per channel on 256 levels (PIL ``ImageOps.equalize``'s lookup table)."""
    n, c, h, w = x.shape
    v = _to_uint(x).reshape(n * c, h * w)
    hist = torch.zeros(n * c, 256, dtype=torch.int64, device=x.device).scatter_add_(1, v, torch.ones_like(v))
    last = 255 - hist.flip(1).ne(0).to(torch.int64).argmax(dim=1)  # highest value present
    step = (h * w - hist.gather(1, last[:, None])[:, 0]) // 255
    cum = hist.cumsum(1) - hist  # pixels strictly below each value
    lut = ((cum + (step // 2)[:, None]) // step.clamp_min(1)[:, None]).clamp(max=255)
    out = lut.gather(1, v).to(x.dtype) / 255
    out = torch.where((step > 0)[:, None], out, x.reshape(n * c, h * w))
    return out.reshape(n, c, h, w)


def posterize(x: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Keep 4 - int(level * 4 / 10) bits per channel (reference: ``ImageOps.posterize``)."""
    bits = 4 - (level * 4 / 10).floor().to(torch.int64)
    shift = (8 - bits).view(-1, 1, 1, 1)
    v = _to_uint(x)
    return ((v >> shift) << shift).to(x.dtype) / 255


def solarize(x: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Invert values >= 256 - int(level * 256 / 10) (on the 0..255 scale)."""
    thr = (256 - (level * 256 / 10).floor()).view(-1, 1, 1, 1)
    v = _to_uint(x).to(x.dtype)
    return torch.where(v >= thr, 255 - v, v) / 255


def _affine(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Resample with input = A @ output + b in pixel coordinates (origin at the top-left corner,
    x right, y down), bilinear, black outside: PIL's ``Image.transform(AFFINE)`` convention.
    a: (n, 2, 2), b: (n, 2)."""
    n, _, h, w = x.shape
    s = torch.tensor([w / 2, h / 2], dtype=x.dtype, device=x.device)
    a_n = a / s.view(1, 2, 1) * s.view(1, 1, 2)  # S^-1 A S
    b_n = (a @ s.view(1, 2, 1).expand(n, 2, 1))[:, :, 0] / s + b / s - 1
    theta = torch.cat([a_n, b_n[:, :, None]], dim=2)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _eye(n: int, x: torch.Tensor) -> torch.Tensor:
    return torch.eye(2, dtype=x.dtype, device=x.device).expand(n, 2, 2).clone()


def rotate(x: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Rotate about the centre by sign * int(level * 30 / 10) degrees."""
    n, _, h, w = x.shape
    deg = (level * 30 / 10).floor() * sign
    t = deg * math.pi / 180
    cos, sin = torch.cos(t), torch.sin(t)
    a = torch.stack([torch.stack([cos, sin], 1), torch.stack([-sin, cos], 1)], 1).to(x.dtype)
    c = torch.tensor([w / 2, h / 2], dtype=x.dtype, device=x.device)
    b = c - (a @ c.view(1, 2, 1).expand(n, 2, 1))[:, :, 0]
    return _affine(x, a, b)


def shear_x(x: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Shear along x by sign * level * 0.3 / 10 (PIL affine (1, s, 0, 0, 1, 0))."""
    a = _eye(x.shape[0], x)
    a[:, 0, 1] = (level * 0.3 / 10 * sign).to(x.dtype)
    return _affine(x, a, torch.zeros(x.shape[0], 2, dtype=x.dtype, device=x.device))


def shear_y(x: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Shear along y by sign * level * 0.3 / 10 (PIL affine (1, 0, 0, s, 1, 0))."""
    a = _eye(x.shape[0], x)
    a[:, 1, 0] = (level * 0.3 / 10 * sign).to(x.dtype)
    return _affine(x, a, torch.zeros(x.shape[0], 2, dtype=x.dtype, device=x.device))


def _translate(x: torch.Tensor, level: torch.Tensor, sign: torch.Tensor, axis: int) -> torch.Tensor:
    # The reference shifts by int(level * IMAGE_SIZE / 3 / 10) whole pixels; on 8x8 images that is
    # always 0, so robustlab shifts by the same magnitude without truncation (bilinear).
    size = x.shape[3] if axis == 0 else x.shape[2]
    b = torch.zeros(x.shape[0], 2, dtype=x.dtype, device=x.device)
    b[:, axis] = (level * (size / 3) / 10 * sign).to(x.dtype)
    return _affine(x, _eye(x.shape[0], x), b)


def translate_x(x: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Shift along x by sign * level * (W / 3) / 10 pixels."""
    return _translate(x, level, sign, 0)


def translate_y(x: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Shift along y by sign * level * (H / 3) / 10 pixels."""
    return _translate(x, level, sign, 1)


OP_FUNCS: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "autocontrast": autocontrast, "equalize": equalize, "posterize": posterize, "rotate": rotate, "solarize": solarize,
    "shear_x": shear_x, "shear_y": shear_y, "translate_x": translate_x, "translate_y": translate_y,
}


def apply_op(name: str, x: torch.Tensor, level: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """Apply operation ``name`` to (n, C, H, W) images in [0, 1] with per-image level and sign (n,)."""
    return OP_FUNCS[name](x, level.to(x.dtype), sign.to(x.dtype)).clamp(0, 1)


def augmix(x: torch.Tensor, seeds: Sequence[int], *, bounds: tuple[float, float] = (0.0, 1.0), width: int = 3, depth: int = -1,
           severity: float = 3.0, alpha: float = 1.0) -> torch.Tensor:
    """AugMix: mix ``width`` augmentation chains with Dirichlet weights, then skip-connect to x.

    out_i = (1 - m_i) x_i + m_i * sum_j w_ij chain_ij(x_i), with w_i ~ Dirichlet(alpha), m_i ~ Beta(alpha, alpha),
    chain depth uniform in 1..3 (``depth=-1``), operations uniform over :data:`OPS`, magnitudes
    uniform in [0.1, severity] -- all drawn from image i's own seed.

    Shapes: x (N, C, H, W) in ``bounds`` (C = 1 or 3, any H, W) -> (N, C, H, W) in ``bounds``.

    References: Hendrycks et al., "AugMix: A Simple Data Processing Method to Improve Robustness
    and Uncertainty", ICLR 2020; reference code github.com/google-research/augmix (``augment_and_mix``).
    """
    lo, hi = bounds
    n = x.shape[0]
    if n == 0:
        return x.clone()
    plan = sample_plan(seeds, width=width, depth=depth, severity=severity, alpha=alpha)
    x01 = ((x - lo) / (hi - lo)).clamp(0, 1)
    dev, dt = x.device, x.dtype
    levels = torch.as_tensor(plan.levels, dtype=dt, device=dev)
    signs = torch.as_tensor(plan.signs, dtype=dt, device=dev)
    ops = torch.as_tensor(plan.ops, device=dev)
    mix = torch.zeros_like(x01)
    for j in range(plan.weights.shape[1]):
        img = x01.clone()
        for d in range(plan.ops.shape[2]):
            for k, name in enumerate(OPS):
                sel = (ops[:, j, d] == k).nonzero()[:, 0]
                if sel.numel():
                    img[sel] = apply_op(name, img[sel], levels[sel, j, d], signs[sel, j, d])
        mix += torch.as_tensor(plan.weights[:, j], dtype=dt, device=dev).view(-1, 1, 1, 1) * img
    m = torch.as_tensor(plan.skip, dtype=dt, device=dev).view(-1, 1, 1, 1)
    out01 = (1 - m) * x01 + m * mix
    return lo + (hi - lo) * out01
