"""Scoring shared by the adversarial checks: re-checking returned adversarial examples, default
budgets per data set, and turning per-sample flags into scorecard metrics.

Robust accuracy follows REFERENCES.md (AutoAttack / RobustBench / foolbox): the fraction of *all*
n points that are classified correctly and for which no attack of the check found a valid
adversarial example (re-checked here: finite, inside the eps ball, inside the bounds,
misclassified). Clean errors count as non-robust; the worst case over attacks is taken per point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import SuiteError
from ..metrics.stats import wilson_interval
from ..scorecard import CheckResult
from .base import Norm, norms

#: Standard budgets (REFERENCES.md) and robustlab's choices for the others (documented here).
STANDARD_BUDGETS: dict[str, dict[Norm, float]] = {
    "cifar": {Norm.LINF: 8 / 255, Norm.L2: 0.5},
    "imagenet": {Norm.LINF: 4 / 255, Norm.L2: 3.0},
    "mnist": {Norm.LINF: 0.3, Norm.L2: 2.0},
    # sklearn digits (8x8, values 0..1): at Linf 0.1 / L2 0.5 the zoo digits CNN keeps roughly
    # 20-35% robust accuracy: neither trivially robust nor trivially broken.
    "digits": {Norm.LINF: 0.1, Norm.L2: 0.5},
}

ROBUST_ACCURACY_DEFINITION = (
    "fraction of all n evaluated points that are classified correctly and for which no attack of this check found an "
    "input x' with ||x' - x|| <= eps (in the check's norm), inside the model's bounds, finite, with f(x') != y; "
    "clean errors count as non-robust; pointwise worst case over the check's attacks (AutoAttack/RobustBench convention); "
    "95% Wilson score interval."
)


def dataset_family(model: nn.Module) -> str | None:
    """'cifar', 'imagenet', 'mnist', 'digits' from ``model.info.dataset`` or the input shape."""
    info = getattr(model, "info", None)
    name = (getattr(info, "dataset", None) or "").lower()
    for fam in ("cifar", "imagenet", "mnist", "digits"):
        if fam in name:
            return fam
    shape = tuple(getattr(model, "input_shape", None) or ())
    if shape in ((3, 32, 32),):
        return "cifar"
    if shape in ((1, 28, 28),):
        return "mnist"
    if shape in ((1, 8, 8),):
        return "digits"
    if len(shape) == 3 and shape[0] == 3 and shape[1] >= 160:
        return "imagenet"
    return None


def standard_eps(model: nn.Module, norm: Norm) -> float:
    """The data set's standard budget in the model's input scale (bounds other than [0, 1] scale it)."""
    fam = dataset_family(model)
    if fam is None:
        raise SuiteError(
            "no standard adversarial budget is known for this model's data set; set `epsilons:` in the suite entry (e.g. [8/255])."
        )
    lo, hi = (float(b) for b in getattr(model, "bounds", (0.0, 1.0)))
    return STANDARD_BUDGETS[fam][norm] * (hi - lo)


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
        eps = sorted(set(eps) | {prim})
    return eps, prim


def standard_eps_or_none(model: nn.Module, norm: Norm) -> float | None:
    try:
        return round(standard_eps(model, norm), 10)
    except SuiteError:
        return None


def eps_key(eps: float) -> str:
    return f"eps={eps:.4g}"


@dataclass(frozen=True)
class Recheck:
    """Per-sample re-check of returned adversarial examples (all (N,) tensors, CPU)."""

    finite: torch.Tensor
    in_ball: torch.Tensor
    in_bounds: torch.Tensor
    misclassified: torch.Tensor
    norms: torch.Tensor

    @property
    def valid(self) -> torch.Tensor:
        return self.finite & self.in_ball & self.in_bounds & self.misclassified


@torch.no_grad()
def recheck(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, eps: float, norm: Norm, bounds: tuple[float, float]) -> Recheck:
    """robustlab's own verification of attack outputs: finite, ||x_adv - x|| <= eps (relative
    tolerance 1e-5 for Linf, 1e-4 for L2, for float32 round-off), inside bounds (1e-6), f(x_adv) != y."""
    lo, hi = bounds
    fin = torch.isfinite(x_adv).flatten(1).all(1)
    xa = torch.where(torch.isfinite(x_adv), x_adv, x)
    nr = norms((xa - x).float(), norm)
    tol = 1e-5 if norm is Norm.LINF else 1e-4
    in_ball = nr <= eps * (1 + tol) + 1e-7
    in_b = ((xa >= lo - 1e-6) & (xa <= hi + 1e-6)).flatten(1).all(1)
    pred = model(xa).argmax(1)
    mis = pred.ne(y.to(pred.device))
    return Recheck(fin.cpu(), in_ball.cpu(), in_b.cpu(), mis.cpu(), nr.cpu())


def add_robustness_metrics(
    res: CheckResult,
    prefix: str,
    *,
    robust: np.ndarray,
    correct: np.ndarray,
    y: np.ndarray,
    class_names: Sequence[str],
    adv_norms: np.ndarray | None = None,
) -> None:
    """Robust accuracy (Wilson CI), success rate, accuracy given clean-correct, per class and worst
    class, perturbation norms of the found adversarial examples, under ``prefix`` (``.../eps=...``)."""
    n = int(robust.size)
    k = int(robust.sum())
    nc = int(correct.sum())
    res.add_metric(f"{prefix}/robust_accuracy", k / n if n else math.nan, interval=wilson_interval(k, n) if n else None, n=n)
    if nc:
        res.add_metric(f"{prefix}/attack_success_rate", (nc - k) / nc, interval=wilson_interval(nc - k, nc), n=nc)
        res.add_metric(f"{prefix}/robust_accuracy_given_clean_correct", k / nc, n=nc)
    per_class: list[float] = []
    for c, name in enumerate(class_names):
        m = y == c
        if m.any():
            acc = float(robust[m].mean())
            per_class.append(acc)
            res.add_metric(f"{prefix}/class={name}/robust_accuracy", acc, n=int(m.sum()))
    if per_class:
        res.add_metric(f"{prefix}/worst_class_robust_accuracy", min(per_class), n=n)
    if adv_norms is not None:
        found = correct & ~robust
        v = adv_norms[found]
        v = v[np.isfinite(v)]  # a broken point always has the norm of the example that broke it
        if v.size:
            res.add_metric(f"{prefix}/perturbation/median_norm", float(np.median(v)), n=int(v.size))
            res.add_metric(f"{prefix}/perturbation/mean_norm", float(np.mean(v)), n=int(v.size))
            res.add_metric(f"{prefix}/perturbation/max_norm", float(np.max(v)), n=int(v.size))


def standard_definitions(prefix: str, norm: Norm) -> dict[str, str]:
    return {
        f"{prefix}/eps=*/robust_accuracy": ROBUST_ACCURACY_DEFINITION,
        f"{prefix}/robust_accuracy": "robust accuracy at the primary epsilon (the data set's standard budget unless set). " + ROBUST_ACCURACY_DEFINITION,
        f"{prefix}/eps=*/attack_success_rate": "fraction of the clean-correct points for which a valid adversarial example was found (95% Wilson interval).",
        f"{prefix}/eps=*/robust_accuracy_given_clean_correct": "robust points / clean-correct points (ART's 'adversarial accuracy'); not the headline figure.",
        f"{prefix}/eps=*/worst_class_robust_accuracy": "lowest robust accuracy over the classes present (per class: robust points of the class / points of the class).",
        f"{prefix}/eps=*/perturbation/median_norm": f"median {norm.value} norm of x' - x over the points an attack broke (clean errors excluded).",
        "per_sample robust@eps=E": "per point, aligned with the data ids: true if robust at eps E (for McNemar comparisons between releases).",
    }
