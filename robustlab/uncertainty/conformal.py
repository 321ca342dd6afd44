"""Split conformal prediction sets: LAC (= THR), APS and RAPS, written here against their
definitions (no maintained library fits numpy probability arrays without pulling in a training
framework; the few lines are tested against the definitions and the coverage guarantee).

A method gives a non-conformity score s(x, k) for every label k (N, K). On n calibration points
with true-label scores s_1..s_n, ``qhat`` is the ceil((n + 1)(1 - alpha))-th smallest score (the
finite-sample correction; ``inf`` when that rank exceeds n), and the prediction set of a test input
is {k : s(x, k) <= qhat}. For exchangeable data P(y in C(x)) >= 1 - alpha, and <= 1 - alpha + 1/(n + 1)
when the scores have no ties (Vovk et al. 2005; Lei et al. 2018).

* ``lac`` / ``thr``: s = 1 - p_k (Sadinle et al. 2019).
* ``aps``: s = sum of the probabilities ranked above k plus u * p_k (Romano et al. 2020), stored
  minus 1 as -(mass ranked below k + (1 - u) p_k): the same sets, without float saturation at 1.
* ``raps``: APS + lambda * max(0, rank(k) - k_reg), rank 1-based (Angelopoulos et al. 2021), also minus 1.

``randomized=False`` (the default) uses u = 1: deterministic sets, never empty for APS/RAPS, still
valid (slightly conservative); ``randomized=True`` draws u ~ U(0, 1) per input from a seeded
generator (exact coverage, sets may be empty).

References: Romano et al. 2020; Angelopoulos et al. 2021 (RAPS, and their ``conformal_classification``
    code whose score we follow); Angelopoulos & Bates 2023 (gentle introduction).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, cast

import numpy as np

from ..registry import Registry

#: (probs (N, K), u (N,), options) -> scores (N, K) for every label.
ConformalScore = Callable[..., np.ndarray]
CONFORMAL_METHODS: "Registry[ConformalScore]" = Registry("conformal method", group="robustlab.conformal_methods")


@dataclass(frozen=True)
class ConformalCalibration:
    method: str
    alpha: float
    qhat: float
    n: int


@dataclass(frozen=True)
class ConformalEvaluation:
    coverage: float
    mean_set_size: float
    empty_rate: float
    n_covered: int
    n: int


def _lac(probs: np.ndarray, u: np.ndarray, **_: float) -> np.ndarray:
    return 1.0 - probs


CONFORMAL_METHODS.add("lac", _lac)
CONFORMAL_METHODS.add("thr", _lac)


def _below(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Mass ranked strictly below each label plus (1 - u) * p_k, (N, K), summed from the smallest
    probabilities up so that masses like 1e-20 survive (the APS score is 1 minus this)."""
    order = np.argsort(probs, axis=1, kind="mergesort")  # ascending
    ps = np.take_along_axis(probs, order, axis=1)
    below = np.zeros_like(ps)
    below[:, 1:] = np.cumsum(ps, axis=1)[:, :-1]  # exclusive sum: no cancellation
    out = np.empty_like(probs)
    np.put_along_axis(out, order, below, axis=1)
    return cast("np.ndarray", out + (1.0 - u)[:, None] * probs)


@CONFORMAL_METHODS.register("aps")
def _aps(probs: np.ndarray, u: np.ndarray, **_: float) -> np.ndarray:
    """APS score minus 1: -(mass ranked below k + (1 - u) p_k) = (mass above k + u p_k) - 1.

    The constant shift leaves every set unchanged; it keeps scores of confident inputs apart that
    ``mass above + p_k`` would round to exactly 1.0 (with such ties the quantile lands on 1.0 and
    every label enters every set)."""
    return -_below(probs, u)


@CONFORMAL_METHODS.register("raps")
def _raps(probs: np.ndarray, u: np.ndarray, *, lam: float = 0.01, k_reg: int = 1, **_: float) -> np.ndarray:
    """RAPS score minus 1: the APS score plus lam * max(0, rank(k) - k_reg).

    Labels of equal probability are ranked in the order the APS mass ranks them (the one with less
    mass above it first, :func:`_below`'s order reversed), so the mass and the rank penalty never
    order a tie two ways."""
    order = np.argsort(probs, axis=1, kind="mergesort")  # ascending, as in _below
    k = probs.shape[1]
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(k, 0, -1)[None, :].repeat(probs.shape[0], 0), axis=1)
    return _aps(probs, u) + lam * np.maximum(0, rank - k_reg)


def _u(n: int, randomized: bool, rng: np.random.Generator | None) -> np.ndarray:
    if not randomized:
        return np.ones(n)
    if rng is None:
        raise ValueError("randomized conformal sets need a seeded numpy Generator (rng)")
    return rng.random(n)


def label_scores(method: str, probs: np.ndarray, *, randomized: bool = False, rng: np.random.Generator | None = None, **options: float) -> np.ndarray:
    """Non-conformity scores (N, K) of every label under ``method`` for probabilities (N, K)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must be (N, K), got {p.shape}")
    return np.asarray(CONFORMAL_METHODS.get(method)(p, _u(p.shape[0], randomized, rng), **options), dtype=np.float64)


def conformal_quantile(scores: np.ndarray, alpha: float) -> float:
    """The ceil((n+1)(1-alpha))-th smallest of the n calibration scores; inf when that exceeds n."""
    s = np.sort(np.asarray(scores, dtype=np.float64).reshape(-1))
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    r = max(1, math.ceil((s.size + 1) * (1 - alpha) - 1e-9))  # rank 1 at the least: a level near 0 takes the smallest score
    return math.inf if r > s.size or s.size == 0 else float(s[r - 1])


#: what the stored score of a method lacks from its published definition (APS and RAPS are stored
#: minus 1, see the module docstring): the published quantile is ``qhat + PUBLISHED_OFFSET[method]``
PUBLISHED_OFFSET = {"aps": 1.0, "raps": 1.0}


def published_qhat(method: str, qhat: float) -> float:
    """``qhat`` on the scale of the method's published score (APS/RAPS: the mass ranked above the
    label plus u * p_k, plus the RAPS penalty); the sets are the same."""
    return qhat + PUBLISHED_OFFSET.get(method, 0.0)


def calibrate(method: str, probs: np.ndarray, labels: np.ndarray, alpha: float, *, randomized: bool = False, rng: np.random.Generator | None = None, **options: float) -> ConformalCalibration:
    """Fit ``qhat`` on calibration probabilities (n, K) and labels (n,)."""
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    s = label_scores(method, probs, randomized=randomized, rng=rng, **options)[np.arange(y.size), y]
    return ConformalCalibration(method, float(alpha), conformal_quantile(s, alpha), int(y.size))


def prediction_sets(cal: ConformalCalibration, probs: np.ndarray, *, randomized: bool = False, rng: np.random.Generator | None = None, **options: float) -> np.ndarray:
    """Boolean membership (N, K): label k is in the set of input i."""
    return label_scores(cal.method, probs, randomized=randomized, rng=rng, **options) <= cal.qhat


def evaluate_sets(sets: np.ndarray, labels: np.ndarray | None) -> ConformalEvaluation:
    """Coverage (NaN without labels), mean set size and fraction of empty sets of (N, K) sets."""
    s = np.asarray(sets, dtype=bool)
    n = s.shape[0]
    size = s.sum(axis=1)
    if labels is None or n == 0:
        return ConformalEvaluation(math.nan, float(size.mean()) if n else math.nan, float((size == 0).mean()) if n else math.nan, 0, n)
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    cov = s[np.arange(n), y]
    return ConformalEvaluation(float(cov.mean()), float(size.mean()), float((size == 0).mean()), int(cov.sum()), n)
