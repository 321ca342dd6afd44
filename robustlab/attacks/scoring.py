"""Budgets in a model's input scale and the re-check, for the attack layer and its callers.

The budget table itself is :data:`robustlab.attacks.threat.BUDGETS` (torch-free, shared with the
report); this module resolves it for a model (data set from ``model.info.dataset`` or the input
shape, bounds other than [0, 1] scale it) and resolves a suite's epsilon list. Turning outcomes into
scorecard metrics is the checks' job (:mod:`robustlab.checks.attack_scoring`).
"""

from __future__ import annotations

from typing import Sequence

from torch import nn

from ..errors import SuiteError
from .recheck import Recheck, recheck
from .threat import BUDGETS, Norm, dataset_key

__all__ = ["dataset_family", "standard_eps", "standard_eps_or_none", "resolve_epsilons", "budget_scale_problem", "Recheck", "recheck"]


def dataset_family(model: nn.Module) -> str | None:
    """The :data:`BUDGETS` key of a model's data set, from ``model.info.dataset`` or the input shape."""
    info = getattr(model, "info", None)
    key = dataset_key(getattr(info, "dataset", None) or "")
    if key is not None:
        return key
    shape = tuple(getattr(model, "input_shape", None) or ())
    if shape == (3, 32, 32):
        return "cifar10"
    if shape == (1, 28, 28):
        return "mnist"
    if shape == (1, 8, 8):
        return "digits"
    if len(shape) == 3 and shape[0] == 3 and shape[1] >= 160:
        return "imagenet"
    return None


def standard_eps(model: nn.Module, norm: Norm) -> float:
    """The data set's default budget in the model's input scale (bounds other than [0, 1] scale it)."""
    fam = dataset_family(model)
    budget = BUDGETS.get(fam or "", {}).get(norm)
    if budget is None:
        named = getattr(getattr(model, "info", None), "dataset", None)
        known = ", ".join(BUDGETS)
        raise SuiteError(
            f"no standard adversarial budget is known for data set '{named}'; set `epsilons:` in the suite entry (a copy of the suite), in the model's input units."
            if named
            else f"no adversarial budget is known: the data set is not named and the input shape does not imply one; name it with --dataset ({known}) or set `epsilons:` in the suite entry, in the model's input units."
        )
    lo, hi = (float(b) for b in getattr(model, "bounds", (0.0, 1.0)))
    return budget.eps * (hi - lo)


def standard_eps_or_none(model: nn.Module, norm: Norm) -> float | None:
    try:
        return round(standard_eps(model, norm), 10)
    except SuiteError:
        return None


def budget_scale_problem(model: nn.Module, norm: Norm, eps: float) -> str | None:
    """Why an explicit budget ``eps`` (in the model's input units) looks written for another input scale, else None.

    Too small, an attack that cannot move the model and a robust accuracy equal to the clean one:
    the data set's standard budget written in [0, 1] units for a model whose inputs span another
    range (8/255 for --bounds 0,255, which means 8); an L-inf budget below half of one 8-bit intensity
    step of the input range (no 8-bit image can differ by less). Too large, a robust accuracy of 0 by
    construction: an L-inf budget of half the input range or more (8 for inputs in [0, 1]).
    """
    lo, hi = (float(b) for b in getattr(model, "bounds", (0.0, 1.0)))
    span = hi - lo
    if not (eps > 0 and span > 0):
        return None
    std = standard_eps_or_none(model, norm)
    if std is not None and abs(span - 1.0) > 1e-6 and abs(eps * span - std) <= 1e-4 * std:
        return (f"{norm.value} eps {eps:.4g} is the standard budget {std:.4g} divided by the input range {lo:g}..{hi:g}: budgets are in the "
                f"model's input units, so write {std:.6g} (or leave epsilons out for the standard budget).")
    step = span / 255.0
    if norm == Norm.LINF and eps >= 0.5 * span:
        return (f"Linf eps {eps:.4g} is at least half of the input range {lo:g}..{hi:g}: every image can be turned into a uniform gray one, so "
                f"robust accuracy is 0 by construction; budgets are in the model's input units (for inputs in [0, 1], 8/255 is 0.0314, not 8).")
    if norm == Norm.LINF and eps < 0.5 * step:
        return (f"Linf eps {eps:.4g} is below half of one 8-bit intensity step of the input range {lo:g}..{hi:g} ({step:.4g}): "
                f"budgets are in the model's input units (for --bounds 0,255, 8/255 of the range is 8).")
    return None


def resolve_epsilons(model: nn.Module, norm: Norm, epsilons: Sequence[float] | None, primary: float | None, *, sweep: Sequence[float] = (1.0,)) -> tuple[list[float], float]:
    """Epsilon list (sorted, unique) and the primary epsilon (the standard budget by default)."""
    if epsilons:
        eps = sorted({float(e) for e in epsilons})
        std = standard_eps_or_none(model, norm)
        if primary is not None:
            prim = float(primary)
        else:
            near = [e for e in eps if std is not None and abs(e - std) <= 1e-9 * max(1.0, std)]
            prim = near[0] if near else eps[-1]
    else:
        base = standard_eps(model, norm)
        eps = sorted({base * f for f in sweep})
        prim = float(primary) if primary is not None else base
    if prim not in eps:
        from ..metric_keys import eps_segment

        same = [e for e in eps if eps_segment(e) == eps_segment(prim)]
        if same:  # both would report under one metric key
            raise SuiteError(f"primary_eps {prim!r} and the budget {same[0]!r} give the same metric key {eps_segment(prim)} (keys keep 4 significant digits); "
                             f"give primary_eps exactly as {same[0]!r} (e.g. 8/255) or list both in epsilons.")
        eps = sorted(set(eps) | {prim})
    return eps, prim
