"""Saturate: HSV saturation ``clip(S a + b)`` with (a, b) = (.3, 0) (.1, 0) (2, 0) (5, .1) (20, .2)
(held-out corruption).

Deterministic. With hue and value fixed, HSV -> RGB is affine in S: every channel is
``V - S V w`` with a hue-dependent weight ``w = (V - channel) / (V - min)``; so the new pixel is
``V - S' V w`` (grey pixels, whose hue scikit-image sets to 0 = red, become (V, V(1 - S'), V(1 - S')).
This closed form equals scikit-image's rgb2hsv / hsv2rgb round trip up to float rounding.
Grey inputs follow the reference's RGB path (see :mod:`robustlab.corruptions.protocol`).

References: Hendrycks & Dietterich 2019; ``imagecorruptions.saturate``.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..registry import FAST_CORRUPTIONS
from ._ops import check_input, rgb_to_grey

PARAMS = ((0.3, 0.0), (0.1, 0.0), (2.0, 0.0), (5.0, 0.1), (20.0, 0.2))


@FAST_CORRUPTIONS.register("saturate")
def saturate(x: torch.Tensor, severity: int, seeds: Sequence[int]) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> same shape (``seeds`` unused: deterministic)."""
    a, b = PARAMS[check_input(x, severity, seeds)]
    return saturate_affine(x, a, b)


def saturate_affine(x: torch.Tensor, a: float, b: float) -> torch.Tensor:
    """HSV saturation ``clip(S a + b)`` with hue and value kept: (N, C, H, W) -> same."""
    rgb = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
    v = rgb.amax(dim=1, keepdim=True)
    delta = v - rgb.amin(dim=1, keepdim=True)
    s_old = torch.where(delta > 0, delta / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))
    s_new = (s_old * a + b).clamp(0.0, 1.0)
    w = (v - rgb) / torch.where(delta > 0, delta, torch.ones_like(delta))
    coloured = v - s_new * v * w
    grey_pixel = torch.cat((v, v * (1.0 - s_new), v * (1.0 - s_new)), dim=1)
    out = torch.where(delta > 0, coloured, grey_pixel).clamp(0.0, 1.0)
    return rgb_to_grey(out) if x.shape[1] == 1 else out
