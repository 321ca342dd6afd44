"""Shot (Poisson) noise: ``clip(Poisson(c x) / c)`` per pixel and channel, c = 60 25 12 5 3.

Same distribution as the reference (Poisson draws from a per-image ``torch.Generator`` on the CPU,
moved to the input's device); the reference's final 8-bit flooring is not applied.

References: Hendrycks & Dietterich 2019; ``imagecorruptions.shot_noise``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..registry import FAST_CORRUPTIONS
from ._ops import check_input

PHOTONS = (60.0, 25.0, 12.0, 5.0, 3.0)


@FAST_CORRUPTIONS.register("shot_noise")
def shot_noise(x: torch.Tensor, severity: int, seeds: Sequence[int]) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> same shape; counts of image i drawn from ``seeds[i]`` only."""
    return poisson_photons(x, float(PHOTONS[check_input(x, severity, seeds)]), seeds)


def poisson_photons(x: torch.Tensor, c: float, seeds: Sequence[int]) -> torch.Tensor:
    """``clip(Poisson(c x) / c)`` with image i's counts drawn from ``seeds[i]`` only (on the CPU)."""
    rate = (x.detach().float().cpu() * c).clamp_min(0.0)
    g = torch.Generator()
    counts = torch.empty_like(rate)
    for i, s in enumerate(seeds):
        g.manual_seed(int(s) & ((1 << 63) - 1))
        counts[i] = torch.poisson(rate[i], generator=g)
    return (counts.to(device=x.device, dtype=x.dtype) / c).clamp(0.0, 1.0)
