"""Zoom blur: the mean of the image and centre-zoomed copies of it (factors 1 .. 1.10 step .01,
1 .. 1.15 step .01, 1 .. 1.20 step .02, 1 .. 1.25 step .02, 1 .. 1.30 step .03).

Deterministic. Each zoom is the reference's ``clipped_zoom`` (centre crop of ceil(n / z) pixels,
scipy ``zoom`` with order 1 to round(crop * z) pixels, first n kept), done as separable linear
interpolation with the same sample positions; differences are float rounding only. The whole blur
is linear, so small images (up to 1600 pixels) use its dense (H W) x (H W) matrix, built once per
size and severity (one matrix product per batch).

References: Hendrycks & Dietterich 2019; ``imagecorruptions.zoom_blur``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..registry import FAST_CORRUPTIONS
from ._ops import DENSE_MAX_PIXELS, apply_dense, cached_tensor, check_input, clipped_zoom, clipped_zoom_matrix

FACTORS = (
    np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
    np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03),
)


def _zoom_mean(x: torch.Tensor, factors: np.ndarray) -> torch.Tensor:
    out = x.clone()
    for z in factors:
        out += clipped_zoom(x, float(z))
    return out / (len(factors) + 1)


def _dense_zoom(factors: np.ndarray, h: int, w: int) -> np.ndarray:
    """(H W, H W) matrix of the zoom blur: (I + sum_z Z_h(z) (x) Z_w(z)) / (len + 1)."""
    op = np.eye(h * w)
    for z in factors:
        op += np.kron(clipped_zoom_matrix(h, float(z)), clipped_zoom_matrix(w, float(z)))
    return op / (len(factors) + 1)


@FAST_CORRUPTIONS.register("zoom_blur")
def zoom_blur(x: torch.Tensor, severity: int, seeds: Sequence[int]) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> same shape (``seeds`` unused: deterministic)."""
    s = check_input(x, severity, seeds)
    factors = FACTORS[s]
    h, w = int(x.shape[2]), int(x.shape[3])
    if h * w <= DENSE_MAX_PIXELS:
        op = cached_tensor(("zoom_blur", s, h, w), lambda: _dense_zoom(factors, h, w), dtype=x.dtype, device=x.device)
        return apply_dense(x, op).clamp(0.0, 1.0)
    return _zoom_mean(x, factors).clamp(0.0, 1.0)
