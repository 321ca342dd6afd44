"""Gaussian-noise data augmentation for randomized smoothing (Cohen, Rosenfeld & Kolter 2019)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..seeding import per_sample_noise
from .base import DEFENSES, DefenseMethod, DefenseParams, LossOutput, ValMetric, positive


@dataclass(frozen=True)
class GaussianParams(DefenseParams):
    """``sigma``: noise standard deviation in units of the input range, like pixel values in [0, 1]
    (for a model with bounds (lo, hi) the noise std is ``sigma * (hi - lo)``), exactly as the
    ``certify`` check's sigmas; 0.25 by default: train at the sigma you will certify at."""

    sigma: float = field(default=0.25, metadata={"help": "Noise std as a fraction of the input range (as certify's --sigma): std = sigma * (hi - lo)."})

    def validate(self) -> None:
        positive("sigma", self.sigma, allow_none=False)


@DEFENSES.register("gaussian")
class GaussianNoiseTraining(DefenseMethod):
    """Train the base classifier on x + N(0, sigma^2 I), so the smoothed classifier certifies.

    The noisy input is not clipped to the bounds (as in the reference code: the smoothed
    classifier is also queried on unclipped noisy inputs). Noise is per-sample seeded.

    Shapes: x (N, C, H, W), y (N,) -> scalar loss.

    References: Cohen, Rosenfeld & Kolter, "Certified Adversarial Robustness via Randomized
    Smoothing", ICML 2019; reference code github.com/locuslab/smoothing (``train.py``).
    """

    name = "gaussian"
    description = "Gaussian-noise augmentation for randomized smoothing (Cohen et al. 2019)"
    references = "Cohen, Rosenfeld & Kolter ICML 2019"
    Params = GaussianParams
    val_metric = ValMetric.NOISE
    params: GaussianParams

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, seeds: Sequence[int], bounds: tuple[float, float]) -> LossOutput:
        noise = per_sample_noise(list(seeds), tuple(x.shape[1:]), device=x.device, dtype=x.dtype)
        logits = model(x + self.params.sigma * (bounds[1] - bounds[0]) * noise)  # [0, 1] units, as certify
        return LossOutput(F.cross_entropy(logits, y), logits.detach(), {})
