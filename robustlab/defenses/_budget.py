"""Resolving a method's budget (epsilon, step size) from the model's data set."""

from __future__ import annotations

from torch import nn

from ..attacks.base import Norm


def resolve_eps(model: nn.Module, eps: float | None, norm: Norm) -> float:
    """``eps`` if given, else the data set's standard budget in the model's input scale
    (CIFAR Linf 8/255, MNIST 0.3, digits 0.1, ...: ``robustlab.attacks.scoring.STANDARD_BUDGETS``)."""
    if eps is not None:
        return float(eps)
    from ..attacks.scoring import standard_eps

    return float(standard_eps(model, norm))
