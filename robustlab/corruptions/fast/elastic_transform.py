"""Elastic transform: every pixel is resampled (bilinear) at its position plus a smooth random
displacement, as the reference does (its own modification of Simard et al.'s elastic distortion).

Per image: dx and dy are fields of U(-d, d) noise, d = 0.005 H (the reference uses the height for
both), smoothed by a Gaussian with sigma = 0.01 (H, W) (truncate 3, ``reflect`` borders), times
alpha = 250 * (.05, .065, .085, .1, .12). The image is sampled at (y + dy, x + dx) with
``reflect`` (half-sample symmetric) borders like ``scipy.ndimage.map_coordinates(order=1,
mode='reflect')``: ``grid_sample(mode='bilinear', padding_mode='reflection', align_corners=False)``
implements exactly that boundary. Same distribution as the reference; the uniform draws come from a
per-image ``torch.Generator`` instead of numpy's global RNG. Given the same fields the warp matches
the reference to float rounding (:func:`elastic_warp` is tested against ``map_coordinates``).

References: Hendrycks & Dietterich 2019; ``imagecorruptions.elastic_transform``; Simard, Steinkraus
& Platt, ICDAR 2003.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from ..registry import FAST_CORRUPTIONS
from ._ops import check_input, gaussian_blur, per_image

ALPHA = tuple(250 * a for a in (0.05, 0.065, 0.085, 0.1, 0.12))


def elastic_warp(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Sample (N, C, H, W) ``x`` at (row + dy, col + dx), bilinear, half-sample symmetric borders.

    Args:
        x: (N, C, H, W) images.
        dx, dy: (N, H, W) displacements in pixels (columns, rows).
    Returns:
        (N, C, H, W) warped images.
    """
    n, _, h, w = x.shape
    rows = torch.arange(h, dtype=x.dtype, device=x.device).view(1, h, 1)
    cols = torch.arange(w, dtype=x.dtype, device=x.device).view(1, 1, w)
    gx = (2.0 * (cols + dx) + 1.0) / w - 1.0
    gy = (2.0 * (rows + dy) + 1.0) / h - 1.0
    grid = torch.stack((gx.expand(n, h, w), gy.expand(n, h, w)), dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def displacement_fields(seeds: Sequence[int], height: int, width: int, severity: int, *, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The smoothed random fields (dx, dy), each (N, H, W) float32, image i from ``seeds[i]``."""
    d = height * 0.005
    u = per_image(seeds, lambda g: torch.rand((2, height, width), generator=g), device=device)
    u = (u * 2.0 - 1.0) * d
    smooth = gaussian_blur(u, (0.01 * height, 0.01 * width), mode="reflect", truncate=3.0) * ALPHA[severity - 1]
    return smooth[:, 0], smooth[:, 1]


@FAST_CORRUPTIONS.register("elastic_transform")
def elastic_transform(x: torch.Tensor, severity: int, seeds: Sequence[int]) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> same shape; the displacement of image i depends on ``seeds[i]`` only."""
    check_input(x, severity, seeds)
    dx, dy = displacement_fields(seeds, int(x.shape[2]), int(x.shape[3]), int(severity), device=x.device)
    return elastic_warp(x, dx.to(x.dtype), dy.to(x.dtype)).clamp(0.0, 1.0)
