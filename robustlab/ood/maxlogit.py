"""Maximum logit baseline."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .base import DETECTORS, Detector

if TYPE_CHECKING:
    from ..models.wrapper import RobustModel


@DETECTORS.register("maxlogit")
class MaxLogit(Detector):
    """score(x) = -max_c f_c(x) (unnormalised logits).

    Shapes: x (N, C, H, W) in ``model.bounds`` -> (N,) scores.

    References: Hendrycks et al., "Scaling Out-of-Distribution Detection for Real-World Settings",
        ICML 2022; checked against ``pytorch_ood.detector.MaxLogit``.
    """

    name = "maxlogit"
    logits_only = True

    @torch.no_grad()
    def score(self, model: "RobustModel", x: torch.Tensor) -> torch.Tensor:
        return self.score_logits(model(x.to(model.device)).float())

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return -logits.amax(dim=1)
