"""Impulse (salt and pepper) noise: each pixel and channel independently becomes 0 or 1 (equally
likely) with probability ``amount`` = .03 .06 .09 .17 .27, as ``skimage.util.random_noise(mode='s&p')``.

Same distribution as the reference (one uniform per value decides flip and salt/pepper); draws
from a per-image ``torch.Generator``.

References: Hendrycks & Dietterich 2019; ``imagecorruptions.impulse_noise``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..registry import FAST_CORRUPTIONS
from ._ops import check_input, per_image

AMOUNT = (0.03, 0.06, 0.09, 0.17, 0.27)


@FAST_CORRUPTIONS.register("impulse_noise")
def impulse_noise(x: torch.Tensor, severity: int, seeds: Sequence[int]) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> same shape; flips of image i drawn from ``seeds[i]`` only."""
    p = AMOUNT[check_input(x, severity, seeds)]
    shape = tuple(x.shape[1:])
    u = per_image(seeds, lambda g: torch.rand(shape, generator=g), device=x.device)
    # one uniform per value: u < p/2 -> pepper (0), p/2 <= u < p -> salt (1): flipped with
    # probability p, salt or pepper with probability 1/2 each, as skimage's two Bernoulli draws.
    out = torch.where(u < p, (u >= 0.5 * p).to(x.dtype), x)
    return out.clamp(0.0, 1.0)
