"""Resolving a method's budget (epsilon, step size) from the model's data set."""

from __future__ import annotations

import logging

from torch import nn

from ..attacks.base import Norm

log = logging.getLogger(__name__)


def resolve_eps(model: nn.Module, eps: float | None, norm: Norm) -> float:
    """``eps`` if given, else the data set's standard budget in the model's input scale
    (CIFAR Linf 8/255, MNIST 0.3, digits 0.1, ...: ``robustlab.attacks.scoring.STANDARD_BUDGETS``)."""
    from ..attacks.scoring import budget_scale_problem, standard_eps

    if eps is not None:
        problem = budget_scale_problem(model, norm, float(eps))
        if problem is not None:
            log.warning("the training budget: %s", problem)
        return float(eps)

    from ..errors import SuiteError

    try:
        return float(standard_eps(model, norm))
    except SuiteError:
        raise SuiteError("no standard adversarial training budget is known for this model's data set; pass --eps (in the model's input units) "
                         "or name the data set with --dataset (e.g. --dataset cifar10).") from None
