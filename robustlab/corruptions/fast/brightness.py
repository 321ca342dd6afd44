"""Brightness: add c = .1 .2 .3 .4 .5 to the HSV value channel (clipped to 1).

Deterministic. With hue and saturation fixed, HSV -> RGB is linear in V, so the reference's
``rgb2hsv``/``hsv2rgb`` round trip equals scaling each pixel by ``min(V + c, 1) / V``
(black pixels, V = 0, become grey c); computed in closed form, float rounding only.

References: Hendrycks & Dietterich 2019; ``imagecorruptions.brightness``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..registry import FAST_CORRUPTIONS
from ._ops import check_input

DELTA = (0.1, 0.2, 0.3, 0.4, 0.5)


@FAST_CORRUPTIONS.register("brightness")
def brightness(x: torch.Tensor, severity: int, seeds: Sequence[int]) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> same shape (``seeds`` unused: deterministic)."""
    return brightness_shift(x, DELTA[check_input(x, severity, seeds)])


def brightness_shift(x: torch.Tensor, c: float) -> torch.Tensor:
    """HSV value + ``c`` (clipped to 1) with hue and saturation kept: (N, C, H, W) -> same."""
    v = x.amax(dim=1, keepdim=True)
    v_new = (v + c).clamp(max=1.0)
    scaled = x * (v_new / torch.where(v > 0, v, torch.ones_like(v)))
    return torch.where(v > 0, scaled, v_new.expand_as(x)).clamp(0.0, 1.0)
