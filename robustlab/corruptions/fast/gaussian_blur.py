"""Gaussian blur: ``skimage.filters.gaussian`` with sigma = 1 2 3 4 6 per channel (held-out).

Deterministic. Same kernel (radius ``int(4 sigma + 0.5)``) and boundary (``nearest``, i.e. edge
replication) as scipy.ndimage, separable convolution; differences are float rounding only (the
reference floors to 8 bits at the end, we do not).

References: Hendrycks & Dietterich 2019; ``imagecorruptions.gaussian_blur``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..registry import FAST_CORRUPTIONS
from ._ops import check_input
from ._ops import gaussian_blur as _blur

SIGMA = (1.0, 2.0, 3.0, 4.0, 6.0)


@FAST_CORRUPTIONS.register("gaussian_blur")
def gaussian_blur(x: torch.Tensor, severity: int, seeds: Sequence[int]) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> same shape (``seeds`` unused: deterministic)."""
    s = check_input(x, severity, seeds)
    return _blur(x, SIGMA[s], mode="nearest").clamp(0.0, 1.0)
