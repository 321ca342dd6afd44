"""Defense ``extras-smooth``: cross-entropy with label smoothing on clean inputs (its own typed Params)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from robustlab.defenses.base import DefenseMethod, DefenseParams, LossOutput, ValMetric
from robustlab.errors import SuiteError


@dataclass(frozen=True)
class SmoothParams(DefenseParams):
    smoothing: float = field(default=0.1, metadata={"help": "Label-smoothing mass."})
    sigma: float = field(default=0.1, metadata={"help": "Noise std of the per-epoch validation."})

    def validate(self) -> None:
        if not 0 <= self.smoothing < 1:
            raise SuiteError(f"smoothing must be in [0, 1), got {self.smoothing}.")


class LabelSmoothing(DefenseMethod):
    name = "extras-smooth"
    description = "label smoothing (robustlab-extras)"
    Params = SmoothParams
    val_metric = ValMetric.NOISE
    params: SmoothParams

    def loss(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, seeds: Sequence[int], bounds: tuple[float, float]) -> LossOutput:
        logits = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=self.params.smoothing)
        return LossOutput(loss=loss, logits=logits.detach(), extra={})
