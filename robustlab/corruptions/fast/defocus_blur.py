"""Defocus blur: convolution with an anti-aliased disk, radius 3 4 6 8 10, alias blur .1 .5 .5 .5 .5.

Deterministic. The disk kernel is built as the reference builds it (an aliased disk on a 17x17
grid, or (2r+1)^2 for r > 8, normalised, then a 3x3 (5x5 for r > 8) OpenCV Gaussian blur with
reflect-101 borders) and applied per channel with reflect-101 borders like ``cv2.filter2D``.
OpenCV switches to a DFT for large kernels, so float rounding differs slightly; no 8-bit flooring.
Small images (up to 1600 pixels) use the blur's dense (H W) x (H W) matrix, built once per size
and severity; larger ones an FFT convolution of the reflect-101 padded image.

References: Hendrycks & Dietterich 2019; ``imagecorruptions.defocus_blur``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

from ..registry import FAST_CORRUPTIONS
from ._ops import DENSE_MAX_PIXELS, axis_operator_np, apply_dense, cached_tensor, check_input, fft_conv2d_same, opencv_gaussian_kernel1d

PARAMS = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))


@lru_cache(maxsize=8)
def disk_kernel(radius: int, alias_blur: float) -> np.ndarray:
    """The reference's anti-aliased disk kernel, (K, K) float64."""
    if radius <= 8:
        coords, ksize = np.arange(-8, 9), 3
    else:
        coords, ksize = np.arange(-radius, radius + 1), 5
    xx, yy = np.meshgrid(coords, coords)
    aliased = ((xx**2 + yy**2) <= radius**2).astype(np.float32)
    aliased /= aliased.sum()
    g = opencv_gaussian_kernel1d(ksize, alias_blur)
    t = torch.from_numpy(aliased.astype(np.float64))[None, None]
    from ._ops import conv_separable

    return conv_separable(t, g, g, mode="mirror")[0, 0].numpy()


def dense_defocus(kernel: np.ndarray, h: int, w: int) -> np.ndarray:
    """(H W, H W) matrix of the reflect-101 correlation with ``kernel``: the kernel's SVD splits it
    into separable terms, each the Kronecker product of two 1-D banded operators (exact to float64)."""
    u, sv, vt = np.linalg.svd(kernel)
    op = np.zeros((h * w, h * w))
    for i in range(len(sv)):
        if sv[i] <= sv[0] * 1e-13:
            break
        ah = axis_operator_np(h, tuple(u[:, i] * sv[i]), "mirror")
        aw = axis_operator_np(w, tuple(vt[i]), "mirror")
        op += np.kron(ah, aw)
    op[np.abs(op) < 1e-12] = 0.0  # sigma 0.1 leaves weights ~1e-44: denormals make matmuls crawl
    return op


@FAST_CORRUPTIONS.register("defocus_blur")
def defocus_blur(x: torch.Tensor, severity: int, seeds: Sequence[int]) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> same shape (``seeds`` unused: deterministic)."""
    radius, alias = PARAMS[check_input(x, severity, seeds)]
    kernel = disk_kernel(radius, alias)
    h, w = int(x.shape[2]), int(x.shape[3])
    if h * w <= DENSE_MAX_PIXELS:
        op = cached_tensor(("defocus", radius, alias, h, w), lambda: dense_defocus(kernel, h, w), dtype=x.dtype, device=x.device)
        return apply_dense(x, op).clamp(0.0, 1.0)
    return fft_conv2d_same(x, kernel, mode="mirror").clamp(0.0, 1.0)
