"""Maximum softmax probability (MSP) baseline."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .base import DETECTORS, Detector

if TYPE_CHECKING:
    from ..models.wrapper import RobustModel


@DETECTORS.register("msp")
class MSP(Detector):
    """score(x) = -max_c softmax(f(x))_c.

    Shapes: x (N, C, H, W) in ``model.bounds`` -> (N,) scores in [-1, -1/K].

    References: Hendrycks & Gimpel, "A Baseline for Detecting Misclassified and Out-of-Distribution
        Examples in Neural Networks", ICLR 2017; checked against ``pytorch_ood.detector.MaxSoftmax``.
    """

    name = "msp"
    logits_only = True

    @torch.no_grad()
    def score(self, model: "RobustModel", x: torch.Tensor) -> torch.Tensor:
        return self.score_logits(model(x.to(model.device)).float())

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return -logits.softmax(dim=1).amax(dim=1)
