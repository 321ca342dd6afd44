"""Uncertainty numbers at their edges, each checked against its definition:
the conformal rank never wraps (a level near 0 takes the smallest score, not the largest), APS/RAPS
quantiles are reported on the published score scale, adaptive ECE does not split ties by position,
and a flat validation NLL leaves T = 1 instead of the search bound."""

from __future__ import annotations

import math

import numpy as np
import pytest

from robustlab.uncertainty.calibration import adaptive_ece, fit_temperature
from robustlab.uncertainty.conformal import calibrate, conformal_quantile, label_scores, published_qhat


def test_a_level_near_zero_takes_the_smallest_score() -> None:
    """Before: rank ceil(51 * 1e-12 - 1e-9) = 0 and s[-1] took the largest score (sets grew as the level fell)."""
    s = np.array([0.3, 0.1, 0.9, 0.5])
    assert conformal_quantile(s, 1 - 1e-12) == 0.1
    assert conformal_quantile(s, 0.999) == 0.1
    assert conformal_quantile(s, 0.5) == 0.5  # ceil(5 * 0.5) = 3rd smallest of 0.1, 0.3, 0.5, 0.9
    levels = [1e-12, 1e-3, 0.1, 0.5, 0.8]
    q = [conformal_quantile(s, 1 - lv) for lv in levels]
    assert q == sorted(q)  # non-decreasing in the level


def _romano_aps(probs: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Romano et al.'s non-randomised APS score of the true label, written from the definition."""
    out = []
    for p, k in zip(probs, y):
        out.append(p[p > p[k]].sum() + p[k])
    return np.asarray(out)


def test_aps_and_raps_quantiles_are_reported_on_the_published_scale() -> None:
    """Before: the scorecard's APS qhat was the published quantile minus 1 (-0.075 for 0.925)."""
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 10)) * 3
    probs = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = rng.integers(0, 10, 300)
    cal = calibrate("aps", probs, y, 0.1)
    ref = np.sort(_romano_aps(probs, y))[math.ceil(301 * 0.9) - 1]
    assert published_qhat("aps", cal.qhat) == pytest.approx(ref, abs=1e-12)
    assert published_qhat("lac", 0.25) == 0.25
    raps = calibrate("raps", probs, y, 0.1, lam=0.01, k_reg=1)
    rank = (probs > probs[np.arange(300), y][:, None]).sum(1) + 1
    ref_raps = np.sort(_romano_aps(probs, y) + 0.01 * np.maximum(0, rank - 1))[math.ceil(301 * 0.9) - 1]
    assert published_qhat("raps", raps.qhat) == pytest.approx(ref_raps, abs=1e-12)
    # the stored scores give the same sets as the published ones
    s = label_scores("aps", probs)
    assert ((s <= cal.qhat) == (s + 1.0 <= published_qhat("aps", cal.qhat))).mean() > 0.999


def test_adaptive_ece_keeps_ties_together_and_ignores_the_order() -> None:
    """Before: constant confidences gave 0.10 (ties split by index) and shuffles of the same data differed."""
    conf = np.full(100, 0.1)
    correct = np.zeros(100)
    correct[::10] = 1  # accuracy 0.1 = the confidence
    assert adaptive_ece(conf, correct) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(1)
    c = np.round(rng.random(50), 1)  # many ties
    k = (rng.random(50) < c).astype(float)
    vals = set()
    for seed in range(5):
        perm = np.random.default_rng(seed).permutation(50)
        vals.add(round(adaptive_ece(c[perm], k[perm]), 12))
    assert len(vals) == 1, vals
    # without ties it is the equal-mass binning: 4 points, 2 bins
    assert adaptive_ece(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 1, 1, 1.0]), n_bins=2) == pytest.approx(0.5 * abs(0.5 - 0.15) + 0.5 * abs(1 - 0.85))


def test_a_flat_validation_nll_keeps_temperature_one() -> None:
    """Before: constant logits (NLL independent of T) returned the search bound, 19.99999."""
    z = np.zeros((40, 10))
    y = np.arange(40) % 10
    assert fit_temperature(z, y) == 1.0
    # a real fit still moves: overconfident logits get T > 1
    rng = np.random.default_rng(0)
    z = rng.normal(size=(400, 5)) * 10
    y = rng.integers(0, 5, 400)
    assert fit_temperature(z, y) > 2.0
