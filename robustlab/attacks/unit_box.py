"""Adapter for reference attacks that assume inputs in [0, 1] (pyautoattack clamps to the literal
range): the model is presented on [0, 1], inputs and budgets are rescaled, results mapped back."""

from __future__ import annotations

from typing import cast

import torch
from torch import nn


class UnitBox(nn.Module):
    """Presents a model with bounds (lo, hi) as a model on [0, 1]."""

    def __init__(self, model: nn.Module, lo: float, hi: float) -> None:
        super().__init__()
        self.model = model
        self.lo, self.hi = lo, hi
        self.training = model.training  # the wrapper's own flag only (foolbox warns on a module in training mode)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return cast("torch.Tensor", self.model(self.lo + (self.hi - self.lo) * u))


def on_unit_box(model: nn.Module, x: torch.Tensor, eps: float, bounds: tuple[float, float]) -> tuple[nn.Module, torch.Tensor, float]:
    """(model on [0, 1], x in [0, 1], eps in [0, 1] scale); the identity for bounds (0, 1)."""
    lo, hi = bounds
    if (lo, hi) == (0.0, 1.0):
        return model, x, eps
    return UnitBox(model, lo, hi), (x - lo) / (hi - lo), eps / (hi - lo)


def from_unit_box(u: torch.Tensor, bounds: tuple[float, float]) -> torch.Tensor:
    lo, hi = bounds
    return u if (lo, hi) == (0.0, 1.0) else lo + (hi - lo) * u
