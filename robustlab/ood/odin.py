"""ODIN: temperature scaling and input preprocessing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence, cast

import torch
import torch.nn.functional as F

from .base import DETECTORS, Detector, DetectorError, input_gradient_sign, perturb

if TYPE_CHECKING:
    from ..models.wrapper import RobustModel


@DETECTORS.register("odin")
class ODIN(Detector):
    """ODIN outlier score.

    x' = clamp(x - eps * (hi - lo) * sign(grad_x [-log S_yhat(x; T)]), lo, hi), with yhat the predicted
    class and S(x; T) = softmax(f(x) / T); score(x) = -max_c S_c(x'; T).
    ``eps`` is a fraction of the width of ``model.bounds`` (for [0, 1] inputs, pixel units); the
    gradient is taken on the whole batch at once, with respect to the input only.
    Cost: two forward passes and one backward pass.

    Shapes: x (N, C, H, W) in ``model.bounds`` -> (N,) scores in [-1, -1/K].

    Args:
        temperature: T (paper default 1000); tuned on validation data by the ood check.
        eps: perturbation magnitude (paper grid 0..0.004); tuned on validation data by the ood check.

    References: Liang, Li & Srikant, "Enhancing The Reliability of Out-of-distribution Image Detection
        in Neural Networks", ICLR 2018 (github.com/facebookresearch/odin); checked against
        ``pytorch_ood.detector.ODIN``.
    """

    name = "odin"
    tunable = ("temperature", "eps")

    def __init__(self, *, temperature: float = 1000.0, eps: float = 0.0014) -> None:
        super().__init__()
        if not temperature > 0 or eps < 0:
            raise DetectorError(f"ODIN needs temperature > 0 and eps >= 0, got T={temperature}, eps={eps}.")
        self.temperature = float(temperature)
        self.eps = float(eps)

    def config(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "eps": self.eps}

    def _direction(self, model: "RobustModel", x: torch.Tensor, temperature: float) -> torch.Tensor:
        def loss(xg: torch.Tensor) -> torch.Tensor:
            logits = model(xg).float() / temperature
            return F.cross_entropy(logits, logits.argmax(dim=1), reduction="none")

        return input_gradient_sign(x, loss)

    @torch.no_grad()
    def _score_at(self, model: "RobustModel", x: torch.Tensor, direction: torch.Tensor, temperature: float, eps: float) -> torch.Tensor:
        logits = model(perturb(model, x, direction, eps)).float() / temperature
        return cast("torch.Tensor", -logits.softmax(dim=1).amax(dim=1))

    def score(self, model: "RobustModel", x: torch.Tensor) -> torch.Tensor:
        x = x.to(model.device)
        if self.eps == 0:
            return self._score_at(model, x, torch.zeros_like(x), self.temperature, 0.0)
        return self._score_at(model, x, self._direction(model, x, self.temperature), self.temperature, self.eps)

    def score_grid(self, model: "RobustModel", x: torch.Tensor, grid: Sequence[Mapping[str, Any]]) -> list[torch.Tensor]:
        """One backward pass per temperature, one forward pass per (temperature, eps)."""
        x = x.to(model.device)
        directions: dict[float, torch.Tensor] = {}
        out = []
        for g in grid:
            t = float(g.get("temperature", self.temperature))
            e = float(g.get("eps", self.eps))
            if e != 0 and t not in directions:
                directions[t] = self._direction(model, x, t)
            out.append(self._score_at(model, x, directions.get(t, torch.zeros_like(x)), t, e))
        return out
