"""Selective prediction: the risk-coverage trade-off of abstaining on low-confidence inputs.

Accepting the ``k`` most confident of ``n`` predictions gives coverage ``k/n`` and selective risk
``errors among them / k``. Tied confidences are taken in random order: inside a tie group the
expected number of errors grows linearly, so the curve does not depend on the order of the data.

* AURC = (1/n) sum_{k=1..n} risk(k) (Geifman et al. 2019).
* E-AURC = AURC - AURC*, AURC* the AURC of the oracle that ranks every correct prediction first
  (error rate ``e/n``: risk*(k) = max(0, k - (n - e)) / k).
* Selective risk at coverage c: the threshold ``t`` is fitted on *validation* data (the largest t
  accepting at least a fraction c there, conf >= t), then applied to test data, whose coverage and
  risk are reported (so the achieved test coverage is also a number, not an assumption).
* Coverage at target risk r: on validation data the smallest threshold whose selective risk is
  <= r (maximum coverage); applied to test data. An empirical plug-in choice without the
  high-probability risk guarantee of Geifman & El-Yaniv's SGR.

References: El-Yaniv & Wiener 2010; Geifman & El-Yaniv 2017 (SGR); Geifman et al. 2019 (AURC,
    E-AURC), checked against their definitions on hand-made examples (tests/test_uncertainty_selective.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RiskCoverage:
    """The curve at every k = 1..n: coverage (n,) and selective risk (n,)."""

    coverage: np.ndarray
    risk: np.ndarray

    @property
    def aurc(self) -> float:
        return float(self.risk.mean()) if self.risk.size else math.nan


@dataclass(frozen=True)
class SelectiveResult:
    """Test coverage and selective risk at a validation-fitted threshold."""

    threshold: float
    coverage: float
    risk: float
    n_accepted: int
    n_errors_accepted: int
    n: int


def _prep(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(confidence, dtype=np.float64).reshape(-1)
    y = np.asarray(correct, dtype=bool).reshape(-1)
    if c.shape != y.shape:
        raise ValueError(f"confidence {c.shape} and correct {y.shape} must have the same length")
    return c, y


def risk_coverage(confidence: np.ndarray, correct: np.ndarray) -> RiskCoverage:
    """Risk-coverage curve of confidence (N,) and correct (N,) bool (tie-aware, see module)."""
    c, y = _prep(confidence, correct)
    n = c.size
    if n == 0:
        return RiskCoverage(np.zeros(0), np.zeros(0))
    order = np.argsort(-c, kind="mergesort")
    cs, err = c[order], (~y[order]).astype(np.float64)
    last = np.r_[np.flatnonzero(np.diff(cs)), n - 1]
    first = np.r_[0, last[:-1] + 1]
    cum_err = np.cumsum(err)
    e_end = cum_err[last]
    e_start = e_end - np.add.reduceat(err, first)
    size = last - first + 1
    k = np.arange(1, n + 1, dtype=np.float64)
    g = np.repeat(np.arange(first.size), size)
    expected = e_start[g] + (k - first[g]) * (e_end[g] - e_start[g]) / size[g]
    return RiskCoverage(k / n, expected / k)


def aurc(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Area under the risk-coverage curve, (1/n) sum_k risk(k)."""
    return risk_coverage(confidence, correct).aurc


def optimal_aurc(n: int, n_errors: int) -> float:
    """AURC of the oracle ranking (all correct predictions first)."""
    if n <= 0:
        return math.nan
    k = np.arange(1, n + 1, dtype=np.float64)
    return float((np.maximum(0.0, k - (n - n_errors)) / k).mean())


def eaurc(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Excess AURC: AURC minus the oracle's AURC at the same error rate."""
    c, y = _prep(confidence, correct)
    return aurc(c, y) - optimal_aurc(c.size, int((~y).sum()))


def threshold_for_coverage(confidence: np.ndarray, coverage: float) -> float:
    """The largest t with mean(confidence >= t) >= coverage (an order statistic)."""
    c = np.sort(np.asarray(confidence, dtype=np.float64).reshape(-1))[::-1]
    if c.size == 0:
        raise ValueError("threshold_for_coverage needs at least one confidence value")
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    return float(c[max(1, math.ceil(coverage * c.size - 1e-9)) - 1])


def threshold_for_risk(confidence: np.ndarray, correct: np.ndarray, target_risk: float) -> float:
    """The smallest threshold t whose selective risk on these data (conf >= t) is <= target_risk;
    ``inf`` (abstain on everything) when no threshold reaches it."""
    c, y = _prep(confidence, correct)
    if c.size == 0:
        return math.inf
    order = np.argsort(-c, kind="mergesort")
    cs, err = c[order], (~y[order]).astype(np.float64)
    last = np.r_[np.flatnonzero(np.diff(cs)), c.size - 1]  # thresholds at distinct values
    risk = np.cumsum(err)[last] / (last + 1)
    ok = np.flatnonzero(risk <= target_risk + 1e-12)
    return float(cs[last[ok[-1]]]) if ok.size else math.inf


def apply_threshold(confidence: np.ndarray, correct: np.ndarray, threshold: float) -> SelectiveResult:
    """Coverage and selective risk on (test) data when accepting conf >= threshold."""
    c, y = _prep(confidence, correct)
    acc = c >= threshold
    k = int(acc.sum())
    e = int((acc & ~y).sum())
    return SelectiveResult(float(threshold), k / c.size if c.size else math.nan, e / k if k else math.nan, k, e, int(c.size))


def curve_points(rc: RiskCoverage, *, points: int = 51) -> tuple[list[float], list[float | None]]:
    """The curve resampled at ``points`` coverages in (0, 1] (for plots)."""
    if rc.coverage.size == 0:
        return [], []
    grid = np.linspace(1.0 / points, 1.0, points)
    idx = np.clip(np.ceil(grid * rc.coverage.size).astype(int) - 1, 0, rc.coverage.size - 1)
    return [float(round(g, 4)) for g in grid], [float(rc.risk[i]) for i in idx]
