"""Speckle noise: ``clip(x + x * N(0, sigma^2))``, sigma = .15 .2 .35 .45 .6 (held-out corruption).

Same distribution as the reference; draws from a per-image ``torch.Generator``; no 8-bit flooring.

References: Hendrycks & Dietterich 2019; ``imagecorruptions.speckle_noise``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..registry import FAST_CORRUPTIONS
from ._ops import check_input, gaussian_draws

SIGMA = (0.15, 0.2, 0.35, 0.45, 0.6)


@FAST_CORRUPTIONS.register("speckle_noise")
def speckle_noise(x: torch.Tensor, severity: int, seeds: Sequence[int]) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> same shape; noise of image i from ``seeds[i]`` only."""
    s = check_input(x, severity, seeds)
    noise = gaussian_draws(x, seeds)
    return (x + x * SIGMA[s] * noise).clamp(0.0, 1.0)
