"""Fast (batched torch) ``cifar-c`` corruptions, part 2: glass blur, snow, frost, fog, spatter, elastic.

Contract and randomness as in :mod:`.fast`. Procedures follow ``make_cifar_c.py``:

* glass blur, fog, spatter: the ImageNet-C procedures (:mod:`robustlab.corruptions.fast`) with the
  CIFAR-10-C constants (fog's plasma map is 32x32 for 32x32 images in both);
* snow: noise layer, *centred* clipped zoom, threshold, 8-bit floor (the script writes a uint8 PNG
  for ImageMagick), motion blur with ``imagecorruptions``' NumPy kernel instead of ImageMagick's,
  8-bit rounding, whitening blend;
* frost: one of the five ``imagecorruptions`` frost photographs (``randint(5)``), resized by 0.2 with
  OpenCV-style bilinear sampling (``cv2.resize(fx=0.2, fy=0.2)``), a random 32x32 crop (for other
  sizes an H x W crop), ``clip(a x + b frost)``;
* elastic transform: a random affine warp of the three reference points (``cv2.warpAffine``,
  bilinear, reflect-101 borders), then a smooth random displacement field sampled bilinearly
  (``map_coordinates(order=1, mode='reflect')``); the constants scale with the image side.

References: Hendrycks & Dietterich, ICLR 2019; ``make_cifar_c.py`` (hendrycks/robustness).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence, cast

import numpy as np
import torch
import torch.nn.functional as F

from ..fast._ops import check_input, gaussian_blur, per_image, rgb_to_grey
from ..fast.elastic_transform import elastic_warp
from ..fast.fog import draw_uniforms, fog_with_uniforms, next_power_of_2, plasma_draws
from ..fast.frost import FROST_FILES, frost_image
from ..fast.glass_blur import draw_offsets, glass_blur_with_offsets
from ..fast.motion_blur import motion_taps, shift_sum
from ..fast.snow import draw_snow, gray
from ..fast.spatter import draw_normals, spatter_with_normals
from ..registry import FAST_CIFAR_C
from .constants import FROST_SCALE, const
from .fast import centred_zoom

Tensor = torch.Tensor


@FAST_CIFAR_C.register("glass_blur")
def glass_blur(x: Tensor, severity: int, seeds: Sequence[int]) -> Tensor:
    """Blur, local pixel swaps, blur; (sigma, delta, iterations) = (.05,1,1) (.25,1,1) (.4,1,1) (.25,1,2) (.4,1,2)."""
    check_input(x, severity, seeds)
    if x.shape[0] == 0:
        return x.clone()
    p = const("glass_blur", severity)
    offsets = draw_offsets(seeds, x.shape[-2], x.shape[-1], severity, params=p)
    return glass_blur_with_offsets(x, severity, offsets, params=p)


@FAST_CIFAR_C.register("fog")
def fog(x: Tensor, severity: int, seeds: Sequence[int]) -> Tensor:
    """Plasma-fractal fog, (strength, decay) = (.2, 3) (.5, 3) (.75, 2.5) (1, 2) (1.5, 1.75)."""
    check_input(x, severity, seeds)
    if x.shape[0] == 0:
        return x.clone()
    mapsize = next_power_of_2(max(x.shape[-2], x.shape[-1], 3))
    return fog_with_uniforms(x, severity, draw_uniforms(seeds, plasma_draws(mapsize)), params=const("fog", severity))


@FAST_CIFAR_C.register("spatter")
def spatter(x: Tensor, severity: int, seeds: Sequence[int]) -> Tensor:
    """Water (severity 1-3) or mud (4-5) spatter with the CIFAR-10-C constants."""
    check_input(x, severity, seeds)
    if x.shape[0] == 0:
        return x.clone()
    return spatter_with_normals(x, severity, draw_normals(seeds, x.shape[-2], x.shape[-1]), params=const("spatter", severity))


@FAST_CIFAR_C.register("snow")
def snow(x: Tensor, severity: int, seeds: Sequence[int]) -> Tensor:
    """Snow layer N(loc, scale), centred zoom, threshold, motion blur along U(-135, -45) degrees."""
    check_input(x, severity, seeds)
    if x.shape[0] == 0:
        return x.clone()
    loc, scale, zoom, thr, radius, sigma, blend = const("snow", severity)
    normals, angles = draw_snow(seeds, x.shape[-2], x.shape[-1])
    layer = loc + scale * normals.to(device=x.device, dtype=x.dtype)[:, None]
    layer = centred_zoom(layer, float(zoom))
    layer = torch.where(layer < thr, torch.zeros_like(layer), layer)
    layer = torch.floor(layer.clamp(0.0, 1.0) * 255.0) / 255.0  # uint8 PNG handed to ImageMagick
    dy, dx, wts = motion_taps(angles, int(radius), float(sigma), layer.shape[-2], layer.shape[-1])
    layer = torch.round(shift_sum(layer, dy, dx, wts).clamp(0.0, 1.0) * 255.0) / 255.0
    whitened = blend * x + (1 - blend) * torch.maximum(x, gray(x) * 1.5 + 0.5)
    return cast("torch.Tensor", (whitened + layer + torch.flip(layer, dims=(-2, -1))).clamp_(0.0, 1.0))


def _bilinear_matrix(n_in: int, n_out: int, scale: float) -> np.ndarray:
    """(n_out, n_in) rows of OpenCV's INTER_LINEAR resize with ``fx = scale`` (source coordinate
    ``(j + 0.5) / scale - 0.5``, clamped to the edges)."""
    m = np.zeros((n_out, n_in))
    for j in range(n_out):
        c = (j + 0.5) / scale - 0.5
        lo = int(np.floor(c))
        f = c - lo
        if lo < 0:
            lo, f = 0, 0.0
        hi = min(lo + 1, n_in - 1)
        lo = min(lo, n_in - 1)
        m[j, lo] += 1.0 - f
        m[j, hi] += f
    return m


@lru_cache(maxsize=None)
def small_frost(index: int) -> Tensor:
    """(3, h, w) float32 photograph ``index`` resized by 0.2 (OpenCV bilinear), rounded to 0..255."""
    img = frost_image(index).to(torch.float64)
    h, w = img.shape[-2:]
    oh, ow = int(round(h * FROST_SCALE)), int(round(w * FROST_SCALE))
    mh = torch.from_numpy(_bilinear_matrix(int(h), oh, FROST_SCALE))
    mw = torch.from_numpy(_bilinear_matrix(int(w), ow, FROST_SCALE))
    return torch.matmul(torch.matmul(mh, img), mw.T).round_().clamp_(0.0, 255.0).to(torch.float32)


@FAST_CIFAR_C.register("frost")
def frost(x: Tensor, severity: int, seeds: Sequence[int]) -> Tensor:
    """``clip(a x + b frost)`` with a random crop of a 0.2-scaled frost photograph."""
    check_input(x, severity, seeds)
    if x.shape[0] == 0:
        return x.clone()
    a, b = const("frost", severity)
    h, w = int(x.shape[-2]), int(x.shape[-1])
    crops = []
    g = torch.Generator()
    for s in seeds:
        g.manual_seed(int(s) & ((1 << 63) - 1))
        idx = int(torch.randint(0, len(FROST_FILES), (), generator=g))
        layer = small_frost(idx)
        fh, fw = int(layer.shape[1]), int(layer.shape[2])
        if fh <= h or fw <= w:
            layer = F.interpolate(layer[None], size=(max(fh, h + 1), max(fw, w + 1)), mode="bilinear", align_corners=False)[0]
            fh, fw = int(layer.shape[1]), int(layer.shape[2])
        top = int(torch.randint(0, fh - h, (), generator=g))
        left = int(torch.randint(0, fw - w, (), generator=g))
        crops.append(layer[:, top : top + h, left : left + w])
    grey = x.shape[1] == 1
    rgb = x.expand(-1, 3, -1, -1) if grey else x
    out = (torch.stack(crops).to(device=x.device, dtype=x.dtype) * (float(b) / 255.0) + float(a) * rgb).clamp_(0.0, 1.0)
    return rgb_to_grey(out).clamp_(0.0, 1.0) if grey else out


def affine_warp(x: Tensor, theta: Tensor) -> Tensor:
    """``cv2.warpAffine(x, M)`` for (N, C, H, W) ``x`` and (N, 2, 3) forward maps M (pixel
    coordinates, x = column): bilinear, reflect-101 borders."""
    n, _, h, w = x.shape
    full = torch.cat([theta, torch.tensor([0.0, 0.0, 1.0], dtype=theta.dtype).expand(n, 1, 3)], dim=1)
    inv = torch.linalg.inv(full)[:, :2]  # dst -> src
    cols = torch.arange(w, dtype=theta.dtype).view(1, 1, w).expand(1, h, w)
    rows = torch.arange(h, dtype=theta.dtype).view(1, h, 1).expand(1, h, w)
    sx = inv[:, 0, 0, None, None] * cols + inv[:, 0, 1, None, None] * rows + inv[:, 0, 2, None, None]
    sy = inv[:, 1, 0, None, None] * cols + inv[:, 1, 1, None, None] * rows + inv[:, 1, 2, None, None]
    gx = 2.0 * sx / max(w - 1, 1) - 1.0
    gy = 2.0 * sy / max(h - 1, 1) - 1.0
    grid = torch.stack((gx, gy), dim=-1).to(device=x.device, dtype=x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)


def affine_maps(shift: Tensor, h: int, w: int) -> Tensor:
    """(N, 2, 3) maps sending the script's three points (centre +- a third of the side) to
    themselves plus ``shift`` (N, 3, 2) (as ``cv2.getAffineTransform``)."""
    cy, cx = float(h // 2), float(w // 2)  # np.float32(shape_size) // 2, (rows, cols)
    sq = float(min(h, w) // 3)
    # the script's points are (row, col) pairs handed to OpenCV as (x, y): keep its convention
    p1 = torch.tensor([[cy + sq, cx + sq], [cy + sq, cx - sq], [cy - sq, cx - sq]], dtype=torch.float64)
    p2 = p1[None] + shift.to(torch.float64)
    src = torch.cat([p1, torch.ones(3, 1, dtype=torch.float64)], dim=1)  # (3, 3)
    return cast("torch.Tensor", torch.linalg.solve(src[None].expand(shift.shape[0], 3, 3), p2).transpose(1, 2))  # (N, 2, 3)


@FAST_CIFAR_C.register("elastic_transform")
def elastic_transform(x: Tensor, severity: int, seeds: Sequence[int]) -> Tensor:
    """Random affine warp (points moved by U(-c2, c2)), then a displacement field
    ``gaussian(U(-1, 1), c1) c0`` sampled bilinearly; c = side x constants."""
    check_input(x, severity, seeds)
    if x.shape[0] == 0:
        return x.clone()
    n, _, h, w = x.shape
    side = float(h)  # the script's IMSIZE (32); it applies row sizes to both axes
    alpha, sigma, aff = (side * float(v) for v in const("elastic_transform", severity))

    # per image: 6 uniforms for the affine shift, then 2 H W for the field (one call draws both in
    # that order: CPU uniform draws are sequential); the arithmetic is batched afterwards
    u = per_image(seeds, lambda g: torch.rand(6 + 2 * h * w, generator=g, dtype=torch.float64))
    shift = ((u[:, :6] * 2 - 1) * aff).reshape(n, 3, 2).to(torch.float32).to(torch.float64)  # the script casts to float32
    warped = affine_warp(x, affine_maps(shift, h, w))
    fields = (u[:, 6:] * 2 - 1).reshape(n, 2, h, w)
    if sigma > 0:
        fields = gaussian_blur(fields, sigma, mode="reflect", truncate=3.0)
    fields = (fields * alpha).to(device=x.device, dtype=x.dtype)
    return elastic_warp(warped, fields[:, 0], fields[:, 1]).clamp(0.0, 1.0)
