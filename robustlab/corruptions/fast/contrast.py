"""Contrast: ``(x - m) c + m`` with m the per-image, per-channel mean, c = .4 .3 .2 .1 .05.

Deterministic; float rounding only.

References: Hendrycks & Dietterich 2019; ``imagecorruptions.contrast``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..registry import FAST_CORRUPTIONS
from ._ops import check_input

FACTOR = (0.4, 0.3, 0.2, 0.1, 0.05)


@FAST_CORRUPTIONS.register("contrast")
def contrast(x: torch.Tensor, severity: int, seeds: Sequence[int]) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> same shape (``seeds`` unused: deterministic)."""
    c = FACTOR[check_input(x, severity, seeds)]
    m = x.mean(dim=(2, 3), keepdim=True)
    return ((x - m) * c + m).clamp(0.0, 1.0)
