"""Energy score."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from .base import DETECTORS, Detector, DetectorError

if TYPE_CHECKING:
    from ..models.wrapper import RobustModel


@DETECTORS.register("energy")
class Energy(Detector):
    """score(x) = E(x; T) = -T * logsumexp_c(f_c(x) / T), the free energy of the logits.

    Shapes: x (N, C, H, W) in ``model.bounds`` -> (N,) scores.

    Args:
        temperature: T > 0 (the paper uses T = 1).

    References: Liu, Wang, Owens & Li, "Energy-based Out-of-distribution Detection", NeurIPS 2020;
        checked against ``pytorch_ood.detector.EnergyBased``.
    """

    name = "energy"
    logits_only = True

    def __init__(self, *, temperature: float = 1.0) -> None:
        super().__init__()
        if not temperature > 0:
            raise DetectorError(f"energy temperature must be positive, got {temperature}; use e.g. 1.0.")
        self.temperature = float(temperature)

    def config(self) -> dict[str, Any]:
        return {"temperature": self.temperature}

    @torch.no_grad()
    def score(self, model: "RobustModel", x: torch.Tensor) -> torch.Tensor:
        return self.score_logits(model(x.to(model.device)).float())

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return -self.temperature * torch.logsumexp(logits / self.temperature, dim=1)
