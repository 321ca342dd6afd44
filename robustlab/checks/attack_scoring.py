"""Scorecard side of the attack layer: attack outcomes -> per-sample records -> metrics.

Robust accuracy follows REFERENCES.md (AutoAttack / RobustBench / foolbox): the fraction of *all*
n points that are classified correctly and for which no attack of the check found a valid
adversarial example (re-checked by :mod:`robustlab.attacks.recheck`: finite, inside the eps ball,
inside the bounds, misclassified). Clean errors count as non-robust; the worst case over attacks is
taken per point. Every key is built with :mod:`robustlab.metric_keys`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from .. import metric_keys as mk
from ..stats import wilson_interval
from ..scorecard import CheckResult

if TYPE_CHECKING:
    import torch

    from ..attacks.base import FixedEpsilonAttack
    from ..attacks.threat import Norm
    from .base import RunContext

ROBUST_ACCURACY_DEFINITION = (
    "fraction of all n evaluated points that are classified correctly and for which no attack of this check found an "
    "input x' with ||x' - x|| <= eps (in the check's norm), inside the model's bounds, finite, with f(x') != y; "
    "clean errors count as non-robust; pointwise worst case over the check's attacks (AutoAttack/RobustBench convention); "
    "95% Wilson score interval."
)


def sub(prefix: str, *segments: str) -> str:
    """The key ``prefix/segment/...`` (``prefix`` itself a key), checked by the grammar."""
    return mk.key(*prefix.split("/"), *segments)


def seed_scope(eps: float) -> str:
    """The per-epsilon seed scope (unchanged since schema 1, so the same seed gives the same attack)."""
    return f"eps={eps:.4g}"


def score_batch(ctx: "RunContext", attack: "FixedEpsilonAttack", x: "torch.Tensor", y: "torch.Tensor", eps: float, seeds: Sequence[int], *, early_stop: bool = True) -> dict[str, Any]:
    """Attack with the run's attack view, decide and verify everything on the fp32 model; a
    JSON-serialisable per-sample record (stored per batch for resume), plus ``x_adv`` (the examples
    as re-checked, a tensor the check removes before storing the record)."""
    from ..attacks.verified import verified_perturb

    lo, hi = (float(b) for b in ctx.model.bounds)
    v = verified_perturb(attack, ctx.model, x, y, eps, seeds=seeds, bounds=(lo, hi), attack_model=ctx.fast_model, early_stop=early_stop)
    broken = v.correct & v.check.valid
    robust = v.correct & ~v.check.valid
    return {
        "correct": v.correct.tolist(),
        "robust": robust.tolist(),
        "norm": [float(n) if b else None for n, b in zip(v.check.norms.tolist(), broken.tolist())],
        "claimed": v.claimed,
        "rejected": v.rejected,
        "flipped": v.flipped,
        "x_adv": v.x_adv,  # taken out by the check before the record is stored (--save-adversarial)
    }


def add_robustness_metrics(
    res: CheckResult,
    prefix: str,
    *,
    robust: np.ndarray,
    correct: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    adv_norms: np.ndarray | None = None,
) -> None:
    """Robust accuracy (Wilson CI), success rate, accuracy given clean-correct, per class (by
    index) and worst class, perturbation norms of the found adversarial examples, under ``prefix``
    (``adversarial/<id>/eps_<e>``)."""
    n = int(robust.size)
    k = int(robust.sum())
    nc = int(correct.sum())
    res.add_metric(sub(prefix, "robust_accuracy"), k / n if n else math.nan, interval=wilson_interval(k, n) if n else None, n=n)
    if nc:
        res.add_metric(sub(prefix, "attack_success_rate"), (nc - k) / nc, interval=wilson_interval(nc - k, nc), n=nc)
        res.add_metric(sub(prefix, "robust_accuracy_given_clean_correct"), k / nc, n=nc)
    per_class: list[float] = []
    for c in range(n_classes):
        m = y == c
        if m.any():
            acc = float(robust[m].mean())
            per_class.append(acc)
            res.add_metric(sub(prefix, mk.class_segment(c), "robust_accuracy"), acc, n=int(m.sum()))
    if per_class:
        res.add_metric(sub(prefix, "worst_class_robust_accuracy"), min(per_class), n=n)
    if adv_norms is not None:
        found = correct & ~robust
        v = adv_norms[found]
        v = v[np.isfinite(v)]  # a broken point always has the norm of the example that broke it
        if v.size:
            res.add_metric(sub(prefix, "perturbation", "median_norm"), float(np.median(v)), n=int(v.size))
            res.add_metric(sub(prefix, "perturbation", "mean_norm"), float(np.mean(v)), n=int(v.size))
            res.add_metric(sub(prefix, "perturbation", "max_norm"), float(np.max(v)), n=int(v.size))


def standard_definitions(prefix: str, norm: "Norm") -> dict[str, str]:
    e = mk.EPS_ANY
    return {
        f"{prefix}/{e}/robust_accuracy": ROBUST_ACCURACY_DEFINITION,
        f"{prefix}/robust_accuracy": "robust accuracy at the primary epsilon (the data set's standard budget unless set). " + ROBUST_ACCURACY_DEFINITION,
        f"{prefix}/{e}/attack_success_rate": "fraction of the clean-correct points for which a valid adversarial example was found (95% Wilson interval).",
        f"{prefix}/{e}/robust_accuracy_given_clean_correct": "robust points / clean-correct points (ART's 'adversarial accuracy'); not the headline figure.",
        f"{prefix}/{e}/worst_class_robust_accuracy": "lowest robust accuracy over the classes present (per class: robust points of the class / points of the class).",
        f"{prefix}/{e}/perturbation/median_norm": f"median {norm.value} norm of x' - x over the points an attack broke (clean errors excluded).",
        "per_sample robust/eps_E": "per point, aligned with the data ids: true if robust at eps E (for McNemar comparisons between releases).",
    }
