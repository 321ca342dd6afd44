"""Split conformal prediction: definitions on hand-made examples and the finite-sample coverage
guarantee on exchangeable synthetic data over many seeds."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import betabinom

from robustlab.errors import UnknownNameError
from robustlab.uncertainty.conformal import (
    CONFORMAL_METHODS, calibrate, conformal_quantile, evaluate_sets, label_scores, prediction_sets,
)
from robustlab.uncertainty.scores import softmax


def test_quantile_has_the_finite_sample_correction() -> None:
    s = np.arange(1, 10, dtype=float)  # n = 9
    assert conformal_quantile(s, 0.1) == 9.0  # ceil(10 * 0.9) = 9th smallest
    assert conformal_quantile(s, 0.2) == 8.0  # ceil(10 * 0.8) = 8
    assert conformal_quantile(s, 0.5) == 5.0
    assert conformal_quantile(s[:5], 0.1) == math.inf  # ceil(6 * 0.9) = 6 > 5: the set is every label


def test_scores_hand_made() -> None:
    p = np.array([[0.5, 0.3, 0.2]])
    assert label_scores("lac", p) == pytest.approx(np.array([[0.5, 0.7, 0.8]]))
    assert label_scores("thr", p) == pytest.approx(label_scores("lac", p))
    assert label_scores("aps", p) + 1 == pytest.approx(np.array([[0.5, 0.8, 1.0]]))  # stored minus 1
    u = np.array([0.25])
    r = label_scores("aps", p, randomized=True, rng=_FixedRng(u))
    assert r + 1 == pytest.approx(np.array([[0.125, 0.5 + 0.075, 0.8 + 0.05]]))
    assert label_scores("raps", p, lam=0.1, k_reg=1) + 1 == pytest.approx(np.array([[0.5, 0.9, 1.2]]))
    cal = calibrate("aps", np.array([[0.5, 0.3, 0.2]] * 9), np.array([0, 0, 0, 1, 1, 1, 2, 2, 2]), 0.5)
    assert cal.qhat + 1 == pytest.approx(0.8)  # ceil(10 * 0.5) = 5th smallest of [.5 .5 .5 .8 .8 .8 1 1 1]
    sets = prediction_sets(cal, p)
    assert sets.tolist() == [[True, True, False]]
    ev = evaluate_sets(sets, np.array([1]))
    assert (ev.coverage, ev.mean_set_size, ev.empty_rate) == (1.0, 2.0, 0.0)
    ood = evaluate_sets(np.array([[False, False, False], [True, False, False]]), None)
    assert math.isnan(ood.coverage) and ood.empty_rate == 0.5 and ood.mean_set_size == 0.5
    with pytest.raises(UnknownNameError):
        label_scores("nope", p)
    with pytest.raises(ValueError):
        label_scores("aps", p, randomized=True)  # no generator


def test_aps_scores_keep_tiny_masses_apart() -> None:
    """With p_top = 1 - 3e-20, "mass above + p_k" rounds to exactly 1.0 for every label in float64;
    the scores (stored minus 1 as -(mass below k)) must keep the exact values."""
    p = np.array([[1 - 3e-20, 1e-20, 2e-20]])
    p[0, 0] = 1.0  # what float64 makes of 1 - 3e-20
    s = label_scores("aps", p)
    assert s[0, 0] == pytest.approx(-3e-20, rel=1e-9) and s[0, 2] == pytest.approx(-1e-20, rel=1e-9) and s[0, 1] == 0.0
    # a saturated, 95%-accurate model: the old scores tied at 1.0 put all K labels in every set
    rng = np.random.default_rng(0)

    def confident(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 10, n)
        pred = np.where(rng.random(n) < 0.95, y, (y + 1) % 10)
        z = rng.normal(size=(n, 10))
        z[np.arange(n), pred] += rng.uniform(40, 60, n)
        return softmax(z), y

    pc, yc = confident(500)
    pt, yt = confident(2000)
    ev = evaluate_sets(prediction_sets(calibrate("aps", pc, yc, 0.1), pt), yt)
    assert ev.coverage >= 0.88 and ev.mean_set_size < 9.0, ev


class _FixedRng:
    def __init__(self, u: np.ndarray) -> None:
        self.u = u

    def random(self, n: int) -> np.ndarray:
        return self.u[:n]


def _synthetic(rng: np.random.Generator, n: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Exchangeable (i.i.d.) data: a miscalibrated model's probabilities, labels drawn from a
    sharper distribution (the guarantee does not need a good model)."""
    z = rng.normal(size=(n, k)) * 2
    true = softmax(z * 1.5)
    y = (true.cumsum(1) > rng.random((n, 1))).argmax(1)
    return softmax(z), y


@pytest.mark.parametrize("method,randomized", [("lac", False), ("aps", False), ("aps", True), ("raps", True), ("raps", False)])
@pytest.mark.parametrize("alpha", [0.1, 0.05])
def test_coverage_guarantee_over_many_seeds(method: str, randomized: bool, alpha: float) -> None:
    n_cal, n_test, seeds = 200, 500, 200
    lo, hi = 1 - alpha, 1 - alpha + 1 / (n_cal + 1)
    r = math.ceil((n_cal + 1) * (1 - alpha))
    band = betabinom(n_test, r, n_cal + 1 - r)  # the exact law of the covered count given exchangeability
    q_lo, q_hi = band.ppf(0.005), band.ppf(0.995)
    covs, outside = [], 0
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        pc, yc = _synthetic(rng, n_cal)
        pt, yt = _synthetic(rng, n_test)
        cal = calibrate(method, pc, yc, alpha, randomized=randomized, rng=rng)
        ev = evaluate_sets(prediction_sets(cal, pt, randomized=randomized, rng=rng), yt)
        covs.append(ev.coverage)
        outside += not (q_lo <= ev.n_covered <= q_hi)
    mean = float(np.mean(covs))
    se = float(np.std(covs) / math.sqrt(seeds))
    assert lo - 3 * se <= mean <= hi + 3 * se, (mean, lo, hi, se)
    assert outside <= 0.04 * seeds, outside  # ~1% expected outside the 99% band


def test_registry_lists_methods() -> None:
    assert {"lac", "thr", "aps", "raps"} <= set(CONFORMAL_METHODS.names())


def test_raps_ranks_tied_labels_in_the_order_its_aps_mass_does() -> None:
    """Before: the APS mass put the later of two tied labels first and the rank penalty the earlier one, so with
    p = (0.3, 0.3, 0.2, 0.2) and lam = 0.5 label 0 had the lower RAPS score but label 1 the lower APS score, and
    the sets grew in an order that neither the mass nor the rank alone gives."""
    from robustlab.uncertainty.conformal import label_scores

    rng = np.random.default_rng(0)
    probs = np.round(rng.dirichlet(np.ones(6), size=400), 1)  # many exact ties
    probs = probs / probs.sum(1, keepdims=True)
    probs = np.vstack([probs, [[0.3, 0.3, 0.2, 0.2, 0.0, 0.0]]])
    aps = label_scores("aps", probs)
    raps = label_scores("raps", probs, lam=0.5, k_reg=1)
    for a, r in zip(aps, raps):
        # the penalty is non-decreasing in rank, so RAPS must keep every strict APS order of two labels
        before = a[:, None] < a[None, :]
        lo, hi = np.nonzero(before)
        assert np.all(r[lo] < r[hi]), (a, r)
    last = raps[-1] - aps[-1]
    assert last[1] == 0.0 and last[0] == 0.5  # label 1 is ranked first by the mass, so it carries no penalty
