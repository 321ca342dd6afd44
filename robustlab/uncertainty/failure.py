"""Failure (misclassification) detection: how well a confidence score separates correct from wrong
predictions.

Conventions: *positive* = correct prediction, ranked by confidence (higher = more confident).
AUROC = P(conf of a random correct > conf of a random error) + 0.5 P(tie) (Mann-Whitney U / n_c n_e);
AUPR-error = average precision with errors as the positive class ranked by -confidence;
FPR@95TPR = fraction of errors accepted at the threshold that accepts 95% of the correct predictions.

References: Hendrycks & Gimpel 2017 (protocol); Corbiere et al. 2019 (AUPR-error); Granese et al.
    2021. AUROC and AUPR equal ``sklearn.metrics.roc_auc_score`` / ``average_precision_score``
    (tests/test_uncertainty_failure.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np


@dataclass(frozen=True)
class FailureMetrics:
    auroc: float
    aupr_error: float
    fpr_at_95tpr: float
    n_correct: int
    n_error: int


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties averaged (like ``scipy.stats.rankdata``)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(x.size, dtype=np.float64)
    start = np.r_[0, np.flatnonzero(np.diff(xs)) + 1]
    stop = np.r_[start[1:], x.size]
    avg = (start + stop + 1) / 2.0
    ranks[order] = np.repeat(avg, stop - start)
    return ranks


def auroc(confidence: np.ndarray, correct: np.ndarray) -> float:
    """AUROC of confidence (N,) for correct (N,) bool; NaN when one class is absent."""
    c = np.asarray(confidence, dtype=np.float64)
    y = np.asarray(correct, dtype=bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return math.nan
    r = _ranks(c)
    return float((r[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def average_precision(score: np.ndarray, positive: np.ndarray) -> float:
    """Average precision sum_n (R_n - R_{n-1}) P_n over distinct thresholds, positives ranked by
    higher ``score`` (sklearn's definition, no interpolation); NaN without positives."""
    s = np.asarray(score, dtype=np.float64)
    p = np.asarray(positive, dtype=bool)
    n_pos = int(p.sum())
    if n_pos == 0:
        return math.nan
    order = np.argsort(-s, kind="mergesort")
    ss, pp = s[order], p[order]
    last = np.r_[np.flatnonzero(np.diff(ss)), ss.size - 1]  # last index of each tie group
    tp = np.cumsum(pp)[last]
    k = last + 1
    precision = tp / k
    recall = tp / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def fpr_at_tpr(confidence: np.ndarray, correct: np.ndarray, tpr: float = 0.95) -> float:
    """Fraction of errors with confidence >= t, t the largest threshold that accepts at least
    ``tpr`` of the correct predictions (an order statistic of the correct ones)."""
    c = np.asarray(confidence, dtype=np.float64)
    y = np.asarray(correct, dtype=bool)
    if not y.any() or y.all():
        return math.nan
    cs = np.sort(c[y])[::-1]
    t = cs[max(1, math.ceil(tpr * cs.size - 1e-9)) - 1]
    return float(np.mean(c[~y] >= t))


def failure_metrics(confidence: np.ndarray, correct: np.ndarray, *, tpr: float = 0.95) -> FailureMetrics:
    """AUROC, AUPR-error and FPR@TPR of ``confidence`` (N,) at detecting wrong predictions.

    Args:
        confidence: (N,) higher = more confident. correct: (N,) bool, prediction == label.
    """
    c = np.asarray(confidence, dtype=np.float64).reshape(-1)
    y = np.asarray(correct, dtype=bool).reshape(-1)
    if c.shape != y.shape:
        raise ValueError(f"confidence {c.shape} and correct {y.shape} must have the same length")
    return FailureMetrics(auroc(c, y), average_precision(-c, ~y), fpr_at_tpr(c, y, tpr), int(y.sum()), int((~y).sum()))


def bootstrap_interval(stat: Callable[..., float], *arrays: np.ndarray, rng: np.random.Generator, n_boot: int = 200, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat(*arrays)`` resampling the N rows with ``rng``.

    Resamples on which the statistic is undefined (NaN, e.g. no errors drawn) are dropped.
    """
    n = len(arrays[0])
    vals = []
    for _ in range(int(n_boot)):
        idx = rng.integers(0, n, n)
        v = stat(*(a[idx] for a in arrays))
        if not math.isnan(v):
            vals.append(v)
    if not vals:
        return (math.nan, math.nan)
    a = (1 - level) / 2
    return (float(np.quantile(vals, a)), float(np.quantile(vals, 1 - a)))
