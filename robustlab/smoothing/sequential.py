"""Anytime-valid certification: a confidence sequence for the top-class probability, and the
adaptive CERTIFY that stops sampling as soon as its answer is decided.

Definition (stated in scorecards as ``DEFINITION``). For Bernoulli observations X_1, X_2, ... with
mean p (X_i = 1 when the i-th noisy copy is classified as the selected class), after t samples with
S_t successes the beta-binomial mixture martingale is

    M_t(p) = B(a + S_t, b + t - S_t) / B(a, b) / (p^S_t (1 - p)^(t - S_t)),

the likelihood ratio of a Beta(a, b) mixture of Bernoulli laws against Bernoulli(p). Under the true p,
M_t(p) is a nonnegative martingale with M_0 = 1, so by Ville's inequality
P(exists t: M_t(p) >= 1 / alpha) <= alpha, and

    CS_t = {p : M_t(p) < 1 / alpha}

is an interval that contains p at *every* t simultaneously with probability >= 1 - alpha. Its lower end
may therefore be read at a data-dependent stopping time (and the running maximum of the lower ends is
still valid), which a fixed-n Clopper-Pearson bound does not allow. a = b = 1/2 (Jeffreys), which
costs about 0.5 * log(t) nats over a fixed-n bound at t samples.

Floating-point soundness: bounds are computed in float64; the bisection returns the end of its bracket
that lies *outside* CS_t, after requiring log M_t >= log(1 / alpha) + ``LOG_SLACK`` (1e-9, far above the
~1e-11 rounding error of the log-martingale at t = 1e5), so rounding can only make the bound more
conservative. The Gaussian noise itself is float32 ``torch.randn`` output added in float32: like every
mainstream implementation, the certificate is exact for the smoothed classifier under that sampler,
not under an exact Gaussian; a classifier built to exploit float rounding (Voracek & Hein 2023) could
break it. robustlab does not implement their sound sampler; for conventional classifiers the effect is
below the Monte-Carlo resolution.

References: Robbins (1970), beta-binomial mixture; Howard, Ramdas, McAuliffe & Sekhon, Ann. Statist.
2021, "Time-uniform, nonparametric, nonasymptotic confidence sequences"; Waudby-Smith & Ramdas, JRSS-B
2023 (betting CS); Voracek, NeurIPS 2024 (confidence sequences for randomized smoothing); Horvath et
al. 2022 (input-specific sampling); Voracek & Hein, ICLR 2023 (floating-point soundness). Checked
against an independent Monte-Carlo coverage test (tests/test_certify_adaptive.py).
"""

from __future__ import annotations

import functools
import math
from enum import Enum
from typing import Callable, Sequence, cast

import numpy as np
from scipy.special import betaln
from scipy.stats import norm

#: Beta prior of the mixture (Jeffreys).
PRIOR: tuple[float, float] = (0.5, 0.5)
#: Extra margin (nats) on the log-threshold, against rounding in the log-martingale.
LOG_SLACK = 1e-9
#: First look (estimation samples) and growth of the look schedule of adaptive CERTIFY.
FIRST_LOOK = 128
GROWTH = 1.5

DEFINITION = (
    "Adaptive sampling (anytime-valid): after the n0 selection samples, estimation samples are drawn in looks of growing size "
    "(128, x1.5, ... up to the cap n); after each look a beta-binomial mixture confidence sequence (Jeffreys Beta(1/2, 1/2) prior, "
    "Robbins 1970 / Howard et al. 2021) for pA, CS_t = {p: B(1/2 + S, 1/2 + t - S) / B(1/2, 1/2) / (p^S (1 - p)^(t - S)) < 1/alpha}, "
    "valid at all t simultaneously with probability >= 1 - alpha (Ville's inequality), gives pA_lower (running maximum of its lower "
    "ends) and pA_upper. Sampling stops when pA_lower certifies the largest requested radius reachable within the cap, when pA_upper "
    "shows the next requested radius cannot be reached, or at the cap. R = sigma * Phi^-1(pA_lower); abstain when pA_lower < 0.5. "
    "Bounds in float64, rounded outwards; noise is float32 torch.randn (not Voracek & Hein's sound sampler)."
)

#: Appended to :data:`DEFINITION` when points whose selected class is not their label stop early (``settle_only``).
SETTLE_WRONG_DEFINITION = (
    "A point whose selected class is not its label counts as uncertified at every radius whatever its bound, so for it only the "
    "abstention threshold is decided: it stops once pA_lower >= 1/2 or pA_upper < 1/2. Its class, abstention and majority vote "
    "are those the label-blind rule gives (both stop at the same look while pA_lower < 1/2); its per-sample radius is the smaller "
    "one certified when it stopped. The confidence sequence is valid at any stopping time, including one chosen with the label."
)


class SamplingMode(str, Enum):
    """How CERTIFY spends its noise samples."""

    FIXED = "fixed"  # Cohen et al.: exactly n estimation samples, Clopper-Pearson bound
    ADAPTIVE = "adaptive"  # confidence sequence, stops when decided (at most n samples)


def log_mixture_martingale(successes: np.ndarray, trials: np.ndarray, p: np.ndarray, *, prior: tuple[float, float] = PRIOR) -> np.ndarray:
    """log M_t(p) of the beta-binomial mixture, elementwise (float64). ``p`` in (0, 1)."""
    s = np.asarray(successes, dtype=np.float64)
    t = np.asarray(trials, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    a, b = prior
    with np.errstate(divide="ignore"):  # p at 0 or 1 (a bisection's end): log M is +inf there, as it should be
        return cast("np.ndarray", betaln(a + s, b + t - s) - betaln(a, b) - s * np.log(p) - (t - s) * np.log1p(-p))


def confidence_sequence(
    successes: Sequence[int] | np.ndarray, trials: Sequence[int] | np.ndarray | int, alpha: float, *,
    prior: tuple[float, float] = PRIOR, iters: int = 64,
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper ends of the (1 - alpha) beta-binomial mixture confidence sequence.

    Args:
        successes: (B,) successes S_t, each in ``0..t``.
        trials: (B,) or scalar sample sizes t >= 0.
        alpha: failure probability over all t together, in (0, 1).
    Returns:
        ((B,), (B,)) float64 lower and upper ends; ``[0, 1]`` when t = 0. The true p lies in
        [lower, upper] for every t simultaneously with probability >= 1 - alpha.
    """
    s = np.atleast_1d(np.asarray(successes, dtype=np.float64))
    t = np.broadcast_to(np.asarray(trials, dtype=np.float64), s.shape).copy()
    if np.any(s < 0) or np.any(s > t):
        raise ValueError("successes must lie in 0..trials")
    thr = math.log(1.0 / alpha) + LOG_SLACK
    p_hat = np.divide(s, t, out=np.zeros_like(s), where=t > 0)

    def outside(p: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return log_mixture_martingale(s[rows], t[rows], p, prior=prior) >= thr

    lower = np.zeros_like(s)
    rows = np.nonzero(s > 0)[0]
    lo, hi = np.zeros(rows.size), p_hat[rows].copy()  # lo outside (or 0), hi = p_hat inside (M(p_hat) <= 1)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        out = outside(mid, rows)
        lo, hi = np.where(out, mid, lo), np.where(out, hi, mid)
    lower[rows] = lo
    upper = np.ones_like(s)
    rows = np.nonzero(s < t)[0]
    lo, hi = p_hat[rows].copy(), np.ones(rows.size)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        out = outside(mid, rows)
        lo, hi = np.where(out, lo, mid), np.where(out, mid, hi)
    upper[rows] = hi
    return lower, upper


@functools.lru_cache(maxsize=64)  # a search over t: suites are validated on every parse
def min_certify_samples(alpha: float, *, prior: tuple[float, float] = PRIOR) -> int:
    """The fewest estimation samples with which the confidence sequence can certify anything: the smallest
    t whose lower end on t successes of t reaches 1/2 (the confidence sequence needs more than Clopper-Pearson's
    log2(1 / alpha): it holds at every t at once)."""
    hi = 16
    while True:
        t = np.arange(1, hi + 1)
        ok = np.nonzero(confidence_sequence(t, t, alpha, prior=prior)[0] >= 0.5)[0]
        if ok.size:
            return int(t[ok[0]])
        hi *= 2


def look_schedule(cap: int, *, first: int = FIRST_LOOK, growth: float = GROWTH) -> list[int]:
    """Cumulative estimation sample sizes at which adaptive CERTIFY looks: ``first``, x``growth``, ..., ``cap``."""
    out: list[int] = []
    t = float(min(first, cap))
    while True:
        k = min(int(math.ceil(t)), cap)
        if not out or k > out[-1]:
            out.append(k)
        if k >= cap:
            return out
        t *= growth


def radius_thresholds(radii: Sequence[float], sigma: float) -> np.ndarray:
    """Sorted pA thresholds Phi(r / sigma) of the requested radii, always including 0.5 (r = 0: not abstaining)."""
    if any(not (float(r) >= 0 and math.isfinite(float(r))) for r in radii):
        raise ValueError(f"radii must be non-negative finite numbers, got {list(radii)}")
    thr = {0.5, *(float(norm.cdf(float(r) / sigma)) for r in radii)}
    return np.array(sorted(thr), dtype=np.float64)


def decided(lower: np.ndarray, upper: np.ndarray, thresholds: np.ndarray, reachable: float, settle_only: np.ndarray | None = None) -> np.ndarray:
    """(B,) bool: the certificate cannot change any requested radius's answer any more.

    True where ``lower`` reaches the largest threshold not above ``reachable`` (the best bound the cap
    can give), or where ``upper`` lies below the smallest threshold ``lower`` has not reached yet.
    Rows flagged in ``settle_only`` (B,) need the abstention answer alone (threshold 1/2): True there
    once ``lower >= 1/2`` or ``upper < 1/2``. While ``lower < 1/2`` both rules stop at the same look.
    """
    targets = thresholds[thresholds <= reachable]
    top = targets[-1] if targets.size else thresholds[0]
    nxt_idx = np.searchsorted(thresholds, lower, side="right")  # first threshold strictly above lower
    nxt = np.where(nxt_idx < thresholds.size, thresholds[np.minimum(nxt_idx, thresholds.size - 1)], np.inf)
    out = (lower >= top) | (upper < nxt)
    if settle_only is not None:
        out = np.where(settle_only, (lower >= 0.5) | (upper < 0.5), out)
    return cast("np.ndarray", out)


def adaptive_estimate(
    votes: Callable[[np.ndarray, int, int], np.ndarray], selected: np.ndarray, *, cap: int, alpha: float,
    thresholds: np.ndarray, num_classes: int, settle_only: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sequential estimation of pA for a group of images.

    Args:
        votes: ``votes(rows, num, look)`` -> (len(rows), K) int counts of ``num`` fresh noise samples
            for the images ``rows`` at look ``look`` (noise independent across looks).
        selected: (G,) selected classes (from the separate selection samples).
        cap: at most this many estimation samples per image. alpha: failure probability.
        thresholds: from :func:`radius_thresholds`.
        settle_only: (G,) bool, images whose radius matters to no metric (their selected class is not
            their label): sampling stops once their abstention is decided (see :func:`decided`).
    Returns:
        (G, K) int64 counts, (G,) samples used, (G,) float64 pA_lower (running max of the CS lower ends).
    """
    g = int(selected.shape[0])
    counts = np.zeros((g, num_classes), dtype=np.int64)
    used = np.zeros(g, dtype=np.int64)
    lower, upper = np.zeros(g), np.ones(g)
    # the best lower bound the cap can give (all cap samples in the selected class)
    reachable = float(confidence_sequence([cap], cap, alpha)[0][0])
    active = np.arange(g)
    prev = 0
    for look, t in enumerate(look_schedule(cap)):
        if active.size == 0:
            break
        counts[active] += votes(active, t - prev, look)
        used[active] = t
        s = counts[active, selected[active]]
        lo, up = confidence_sequence(s, t, alpha)
        lower[active] = np.maximum(lower[active], lo)
        upper[active] = np.minimum(upper[active], up)
        active = active[~decided(lower[active], upper[active], thresholds, reachable, None if settle_only is None else settle_only[active])]
        prev = t
    return counts, used, lower
