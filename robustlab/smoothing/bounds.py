"""The statistics of randomized smoothing: confidence bounds, radii and PREDICT's test.

Pure numpy/scipy (no torch), so the report and the tests can reuse them.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy.stats import beta, binomtest, norm


#: the smallest failure probability accepted: below it (subnormal floats) scipy's Beta quantile comes out
#: above the exact Clopper-Pearson bound, so a radius would be larger than the data allow
ALPHA_MIN = 1e-300


def lower_confidence_bound(count: int | Sequence[int] | np.ndarray, n: int, alpha: float) -> np.ndarray:
    """One-sided (1 - alpha) Clopper-Pearson lower bound on a binomial proportion.

    Args:
        count: successes (scalar or (B,) array), each in ``0..n``.
        n: trials.
        alpha: failure probability of the bound, in (0, 1).
    Returns:
        (B,) float64 array (0-d for a scalar): ``Beta(alpha; count, n - count + 1)`` quantile, 0 when
        ``count == 0``. With probability at least 1 - alpha over the draws, the true proportion is at
        least this bound.
    References: Clopper & Pearson (1934); identical to Cohen et al.'s
        ``proportion_confint(count, n, alpha=2 * alpha, method="beta")[0]`` (statsmodels), the lower end
        of a two-sided 1 - 2 alpha interval.
    """
    if not ALPHA_MIN <= alpha < 1:
        raise ValueError(f"alpha must be in [{ALPHA_MIN:g}, 1), got {alpha}")
    k = np.asarray(count, dtype=np.float64)
    if np.any(k < 0) or np.any(k > n):
        raise ValueError(f"counts must lie in 0..n = {n}")
    out = np.zeros_like(k)
    pos = k > 0
    out[pos] = beta.ppf(alpha, k[pos], n - k[pos] + 1)
    return out


def certified_radius(p_lower: float | np.ndarray, sigma: float) -> np.ndarray:
    """L2 radius ``sigma * Phi^-1(p_lower)``, or 0 where ``p_lower < 0.5`` (abstain).

    Args:
        p_lower: (B,) lower bounds on the top-class probability under noise.
        sigma: standard deviation of the Gaussian noise, in input units (``model.bounds`` scale).
    References: Cohen, Rosenfeld & Kolter, "Certified Adversarial Robustness via Randomized
        Smoothing", ICML 2019, Theorem 1 and CERTIFY (``core.py`` of locuslab/smoothing).
    """
    p = np.asarray(p_lower, dtype=np.float64)
    r = sigma * norm.ppf(np.clip(p, 0.0, 1.0))
    return np.where(p >= 0.5, r, 0.0)


def predict_pvalue(count_top: int, count_second: int) -> float:
    """Two-sided binomial test p-value of ``count_top`` out of ``count_top + count_second`` at p = 1/2.

    PREDICT abstains when this p-value exceeds alpha (the two top classes are not told apart).
    References: Hung & Fithian (2019), "Rank verification for exponential families" (the test
        Cohen et al.'s PREDICT uses, ``scipy.stats.binom_test(count1, count1 + count2, p=0.5)``).
    """
    total = int(count_top) + int(count_second)
    if total == 0:
        return 1.0
    return float(binomtest(int(count_top), total, p=0.5).pvalue)


def min_predict_samples(alpha: float) -> int:
    """The fewest samples with which PREDICT can answer at all: all of them for one class gives the
    two-sided p-value 2 * 0.5^n, which must not exceed ``alpha``."""
    return max(1, math.ceil(math.log2(2.0 / alpha) - 1e-12))


def min_certify_samples_fixed(alpha: float) -> int:
    """The fewest estimation samples with which fixed-n CERTIFY can certify anything: with all n votes for
    one class the lower bound is alpha ** (1 / n), which reaches 1/2 only if n > log2(1 / alpha)."""
    return math.floor(math.log(alpha) / math.log(0.5)) + 1


def max_certifiable_radius(n: int, alpha: float, sigma: float) -> float:
    """The largest radius CERTIFY can return with ``n`` samples (all of them in the top class)."""
    p = float(lower_confidence_bound(n, n, alpha))
    return float(certified_radius(p, sigma)) if math.isfinite(p) else 0.0
