"""Gaussian noise: ``clip(x + N(0, sigma^2))`` per pixel and channel, sigma = .08 .12 .18 .26 .38.

Same distribution as the reference; the draws come from a per-image ``torch.Generator`` (seeded
with the image's seed) instead of numpy's global RNG, so individual pixels differ. The reference
also floors its result to 8 bits; we return the unquantised value (mean difference 0.5 grey levels).

References: Hendrycks & Dietterich 2019; ``imagecorruptions.gaussian_noise``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..registry import FAST_CORRUPTIONS
from ._ops import check_input, gaussian_draws

SIGMA = (0.08, 0.12, 0.18, 0.26, 0.38)


@FAST_CORRUPTIONS.register("gaussian_noise")
def gaussian_noise(x: torch.Tensor, severity: int, seeds: Sequence[int]) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> same shape; noise of image i from ``seeds[i]`` only."""
    s = check_input(x, severity, seeds)
    noise = gaussian_draws(x, seeds)
    return (x + SIGMA[s] * noise).clamp(0.0, 1.0)
