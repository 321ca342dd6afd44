"""Exact McNemar test on paired per-sample flags (candidate versus baseline).

Flags are booleans where ``True`` is good (e.g. "robust", "correct"). Samples are paired by id; only
ids present in both runs count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence


@dataclass(frozen=True)
class McNemarResult:
    """Counts and p-values of a paired comparison.

    Attributes:
        n: number of paired samples (ids present in both runs with a usable flag).
        lost: baseline good, candidate bad (``b``).
        gained: baseline bad, candidate good (``c``).
        p_regression: one-sided exact p-value of H0 "no regression" against "candidate worse":
            ``P(X >= lost)``, ``X ~ Binomial(lost + gained, 1/2)``.
        p_two_sided: two-sided exact p-value (``min(1, 2 * min tail)``).
    """

    n: int
    lost: int
    gained: int
    p_regression: float
    p_two_sided: float


def _flag(v: Any) -> bool | None:
    """``v`` as a flag: only JSON true/false are flags. A number that happens to be 0 or 1 (a 2-class model's
    predicted class, a conformal set size, a count of correct cells) is not: pairing it would call a smaller
    number a lost correct prediction."""
    return v if isinstance(v, bool) else None


def is_flag_list(values: Sequence[Any]) -> bool:
    """True when every entry is a bool or None, and one is a bool (a per-sample flag list)."""
    return len(values) > 0 and all(v is None or _flag(v) is not None for v in values) and any(v is not None for v in values)


def exact_mcnemar(lost: int, gained: int) -> tuple[float, float]:
    """Exact (binomial) McNemar p-values ``(one-sided for 'more lost than gained', two-sided)``.

    References: McNemar (1947); the exact conditional version as in
    ``statsmodels.stats.contingency_tables.mcnemar(exact=True)`` (checked in the tests against an
    exact binomial sum, and against statsmodels when it is installed).
    """
    from scipy.stats import binom

    m = lost + gained
    if m == 0:
        return 1.0, 1.0
    one = float(binom.sf(lost - 1, m, 0.5))  # P(X >= lost)
    two = float(2.0 * binom.cdf(min(lost, gained), m, 0.5))  # symmetric under H0: twice the smaller tail
    return min(1.0, one), min(1.0, two)


def paired_mcnemar(
    candidate_ids: Sequence[Any],
    candidate_flags: Sequence[Any],
    baseline_ids: Sequence[Any],
    baseline_flags: Sequence[Any],
) -> McNemarResult:
    """Pair two per-sample flag lists by sample id and run :func:`exact_mcnemar`.

    Args:
        candidate_ids, candidate_flags: (N,) ids and flags of the candidate run (aligned).
        baseline_ids, baseline_flags: (M,) ids and flags of the baseline run (aligned).
    """
    if len(candidate_ids) != len(candidate_flags) or len(baseline_ids) != len(baseline_flags):
        raise ValueError("per-sample flags are not aligned with the sample ids")
    base = {str(i): _flag(f) for i, f in zip(baseline_ids, baseline_flags)}
    n = lost = gained = 0
    for i, f in zip(candidate_ids, candidate_flags):
        c = _flag(f)
        b = base.get(str(i))
        if c is None or b is None:
            continue
        n += 1
        if b and not c:
            lost += 1
        elif c and not b:
            gained += 1
    p1, p2 = exact_mcnemar(lost, gained)
    return McNemarResult(n=n, lost=lost, gained=gained, p_regression=p1, p_two_sided=p2 if not math.isnan(p2) else 1.0)
