"""Proportions with confidence intervals, calibration error and confusion matrices.

All functions take numpy arrays (no torch), so the report and the gates can reuse them.
"""

from __future__ import annotations

import math

import numpy as np

from .scorecard import Interval


def wilson_interval(k: int, n: int, *, level: float = 0.95) -> Interval:
    """Wilson score interval for a binomial proportion ``k / n``.

    References: Wilson (1927); agrees with ``statsmodels.stats.proportion.proportion_confint(method="wilson")``.
    """
    if n <= 0:
        return Interval(math.nan, math.nan, level, "wilson")
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # exactly 0 at k = 0 and exactly 1 at k = n (the closed form; rounding left 1.4e-17 above a point of 0)
    lo = 0.0 if k <= 0 else min(p, max(0.0, centre - half))
    hi = 1.0 if k >= n else max(p, min(1.0, centre + half))
    return Interval(lo, hi, level, "wilson")


def clopper_pearson_interval(k: int, n: int, *, level: float = 0.95) -> Interval:
    """Exact (Clopper-Pearson) two-sided interval for ``k / n``."""
    from scipy.stats import beta

    if n <= 0:
        return Interval(math.nan, math.nan, level, "clopper-pearson")
    a = 1 - level
    lo = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return Interval(lo, hi, level, "clopper-pearson")


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, *, n_bins: int = 15) -> float:
    """ECE with ``n_bins`` equal-width confidence bins (Guo et al. 2017).

    ECE = sum_b |B_b|/N * |acc(B_b) - conf(B_b)|, bins (lo, hi], the first bin including 0.

    Args:
        confidence: (N,) max softmax probability.
        correct: (N,) bool, prediction == label.
    References: Guo et al., "On Calibration of Modern Neural Networks", ICML 2017 (same binning as
        their reference code and torchmetrics' ``MulticlassCalibrationError(norm="l1")``).
    """
    conf = np.asarray(confidence, dtype=np.float64)
    corr = np.asarray(correct, dtype=np.float64)
    n = conf.size
    if n == 0:
        return math.nan
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = idx == b
        if m.any():
            ece += m.sum() / n * abs(corr[m].mean() - conf[m].mean())
    return float(ece)


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, *, n_bins: int = 15) -> dict[str, list[float | None]]:
    """Per-bin accuracy, confidence and count for a reliability diagram."""
    conf = np.asarray(confidence, dtype=np.float64)
    corr = np.asarray(correct, dtype=np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    acc: list[float | None] = []
    cf: list[float | None] = []
    cnt: list[float | None] = []
    for b in range(n_bins):
        m = idx == b
        acc.append(float(corr[m].mean()) if m.any() else None)
        cf.append(float(conf[m].mean()) if m.any() else None)
        cnt.append(float(m.sum()))
    return {"accuracy": acc, "confidence": cf, "count": cnt}


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(C, C) counts, rows = true class, columns = predicted class (scikit-learn's convention)."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm
