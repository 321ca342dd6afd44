"""Calibration metrics on probabilities and temperature scaling fitted on validation logits.

* ECE: equal-width bins of the top-1 confidence (``robustlab.stats.expected_calibration_error``).
* Adaptive ECE: the same sum over ``n_bins`` equal-mass bins (sorted confidences split in
  near-equal groups; Nguyen & O'Connor 2015, Nixon et al. 2019).
* Classwise ECE: for each class k, equal-width bins of p_k, sum_b |B|/N |freq(y=k in B) - mean p_k(B)|,
  averaged over the K classes (Kull et al. 2019).
* NLL: -(1/N) sum_i log p_{y_i} (natural log; probabilities clipped at 1e-15 like scikit-learn).
* Brier: (1/N) sum_i sum_k (p_ik - 1[y_i = k])^2 (multi-class form; 2x the binary form for K = 2).
* Temperature scaling: T = argmin NLL(softmax(z / T)) over validation logits only (Guo et al. 2017),
  searched on log T by a bounded scalar minimiser.

References: Guo et al. 2017; Kull et al. 2019; Nixon et al. 2019; NLL and Brier equal
    ``sklearn.metrics.log_loss`` / ``brier_score_loss`` (tests/test_uncertainty_calibration.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..stats import expected_calibration_error
from .scores import as_logits, logsumexp, softmax


@dataclass(frozen=True)
class CalibrationMetrics:
    ece: float
    adaptive_ece: float
    classwise_ece: float
    nll: float
    brier: float
    n: int


def _probs_labels(probs: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    if p.ndim != 2 or p.shape[0] != y.size:
        raise ValueError(f"probs must be (N, K) with N = len(labels); got {p.shape} and {y.size} labels")
    if y.size and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError("labels must be in 0..K-1")
    return p, y


def adaptive_ece(confidence: np.ndarray, correct: np.ndarray, *, n_bins: int = 15) -> float:
    """ECE over equal-mass bins of the confidence (Nixon et al. 2019's adaptive binning).

    Bins hold about N / n_bins points in confidence order; a group of equal confidences is never
    split across two bins (its boundary moves to the end of the group), so the value does not
    depend on the order of the data: splitting ties by position would pair the same confidence with
    different accuracies (constant logits gave 0.10 instead of 0, and shuffles differed)."""
    c = np.asarray(confidence, dtype=np.float64).reshape(-1)
    y = np.asarray(correct, dtype=np.float64).reshape(-1)
    if c.size == 0:
        return math.nan
    order = np.argsort(c, kind="mergesort")
    cs = c[order]
    bounds = np.cumsum([len(b) for b in np.array_split(np.arange(c.size), min(n_bins, c.size))])[:-1]
    bounds = np.unique(np.searchsorted(cs, cs[bounds - 1], side="right"))  # each cut after the whole tie group of the point before it
    bins = [b for b in np.split(order, bounds[bounds < c.size]) if len(b)]
    return float(sum(len(b) / c.size * abs(y[b].mean() - c[b].mean()) for b in bins))


def classwise_ece(probs: np.ndarray, labels: np.ndarray, *, n_bins: int = 15) -> float:
    """Mean over classes of the equal-width-binned calibration error of p_k against 1[y = k]."""
    p, y = _probs_labels(probs, labels)
    if y.size == 0:
        return math.nan
    onehot = np.eye(p.shape[1])[y]
    return float(np.mean([expected_calibration_error(p[:, k], onehot[:, k], n_bins=n_bins) for k in range(p.shape[1])]))


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    p, y = _probs_labels(probs, labels)
    return float(-np.mean(np.log(np.clip(p[np.arange(y.size), y], 1e-15, 1.0)))) if y.size else math.nan


def brier(probs: np.ndarray, labels: np.ndarray) -> float:
    p, y = _probs_labels(probs, labels)
    return float(np.mean(((p - np.eye(p.shape[1])[y]) ** 2).sum(axis=1))) if y.size else math.nan


def calibration_metrics(probs: np.ndarray, labels: np.ndarray, *, n_bins: int = 15) -> CalibrationMetrics:
    """All calibration metrics of probabilities (N, K) against labels (N,)."""
    p, y = _probs_labels(probs, labels)
    conf = p.max(axis=1)
    correct = p.argmax(axis=1) == y
    return CalibrationMetrics(
        ece=expected_calibration_error(conf, correct, n_bins=n_bins),
        adaptive_ece=adaptive_ece(conf, correct, n_bins=n_bins),
        classwise_ece=classwise_ece(p, y, n_bins=n_bins),
        nll=nll(p, y),
        brier=brier(p, y),
        n=int(y.size),
    )


def _nll_at(z: np.ndarray, y: np.ndarray, t: float) -> float:
    s = z / t
    return float(np.mean(logsumexp(s) - s[np.arange(y.size), y]))


def fit_temperature(val_logits: np.ndarray, val_labels: np.ndarray, *, bounds: tuple[float, float] = (0.05, 20.0)) -> float:
    """Temperature T > 0 minimising the NLL of softmax(val_logits / T) on validation data.

    Args:
        val_logits: (N, K) validation logits. val_labels: (N,) int labels.
    Returns the temperature (a bounded search over log T). 1.0 without validation data, and 1.0
    when every validation prediction is correct: the NLL then falls monotonically as T -> 0, so no
    finite temperature minimises it and the search would return its lower bound (a model made
    falsely certain on test data).
    """
    from scipy.optimize import minimize_scalar

    z = as_logits(val_logits)
    y = np.asarray(val_labels, dtype=np.int64).reshape(-1)
    if y.size == 0:
        return 1.0
    if y.size != z.shape[0]:
        raise ValueError("val_logits and val_labels must have the same length")
    if bool((z.argmax(axis=1) == y).all()):
        return 1.0
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    res = minimize_scalar(lambda lt: _nll_at(z, y, math.exp(lt)), bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    t = math.exp(float(res.x))
    at_one = _nll_at(z, y, 1.0)
    # only a real improvement moves T: a flat NLL (e.g. logits equal across classes, which no T
    # changes) would otherwise return wherever the search stopped, typically a bound
    return t if _nll_at(z, y, t) < at_one - 1e-9 * max(1.0, abs(at_one)) else 1.0


def scaled_probs(logits: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(logits / temperature), (N, K)."""
    return softmax(logits, temperature)
