"""Uncertainty algorithms equal their definitions on hand-made examples and agree with scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

from robustlab.uncertainty import CONFIDENCE_SCORES, confidence
from robustlab.uncertainty.calibration import adaptive_ece, calibration_metrics, classwise_ece, fit_temperature, scaled_probs
from robustlab.uncertainty.failure import average_precision, bootstrap_interval, failure_metrics, fpr_at_tpr
from robustlab.uncertainty.scores import softmax
from robustlab.uncertainty.selective import (
    apply_threshold, aurc, eaurc, optimal_aurc, risk_coverage, threshold_for_coverage, threshold_for_risk,
)


def test_scores_hand_made() -> None:
    z = np.array([[2.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    p = softmax(z)
    assert confidence("msp", z) == pytest.approx(p.max(1))
    assert confidence("max_logit", z) == pytest.approx([2.0, 1.0])
    assert confidence("energy", z) == pytest.approx(np.log(np.exp(z).sum(1)))
    g = (p**2).sum(1)
    assert confidence("doctor", z) == pytest.approx(-(1 - g) / g)
    assert confidence("entropy", z) == pytest.approx((p * np.log(p)).sum(1))
    assert confidence("entropy", z)[1] == pytest.approx(-math.log(3))
    for name in ("msp", "max_logit", "energy", "doctor", "entropy"):
        assert name in CONFIDENCE_SCORES.names()
        assert confidence(name, z)[0] > confidence(name, z)[1]  # the peaked row is more confident
    with pytest.raises(ValueError):
        confidence("msp", np.array([[np.nan, 1.0]]))


def test_failure_hand_made_and_sklearn(rng: np.random.Generator) -> None:
    conf = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    correct = np.array([True, False, True, False, False])
    m = failure_metrics(conf, correct)
    # pairs (correct, error): (0.9 > all 3) + (0.7 > 0.6, 0.5; < 0.8) = 5 of 6
    assert m.auroc == pytest.approx(5 / 6)
    # errors ranked by -conf: 0.5 (P=1), 0.6 (P=1), 0.7 correct, 0.8 (P=3/4): AP = (1 + 1 + 3/4) / 3
    assert m.aupr_error == pytest.approx((1 + 1 + 0.75) / 3)
    # 95% of 2 correct -> both accepted -> t = 0.7 -> errors with conf >= 0.7: 0.8 -> 1/3
    assert m.fpr_at_95tpr == pytest.approx(1 / 3)
    for _ in range(20):
        n = 200
        c = np.round(rng.random(n), 2)  # ties
        y = rng.random(n) < c
        assert failure_metrics(c, y).auroc == pytest.approx(roc_auc_score(y, c))
        assert average_precision(-c, ~y) == pytest.approx(average_precision_score(~y, -c))
    assert math.isnan(failure_metrics(conf, np.ones(5, bool)).auroc)
    assert math.isnan(fpr_at_tpr(conf, np.zeros(5, bool)))


def test_bootstrap_interval_is_seeded_and_covers_estimate(rng: np.random.Generator) -> None:
    c = rng.random(300)
    y = rng.random(300) < c
    from robustlab.uncertainty.failure import auroc

    a = bootstrap_interval(auroc, c, y, rng=np.random.default_rng(1), n_boot=100)
    b = bootstrap_interval(auroc, c, y, rng=np.random.default_rng(1), n_boot=100)
    assert a == b and a[0] < auroc(c, y) < a[1]


def test_risk_coverage_and_aurc_hand_made() -> None:
    conf = np.array([0.9, 0.8, 0.7, 0.6])
    correct = np.array([True, False, True, True])
    rc = risk_coverage(conf, correct)
    assert rc.coverage.tolist() == [0.25, 0.5, 0.75, 1.0]
    assert rc.risk == pytest.approx([0.0, 1 / 2, 1 / 3, 1 / 4])
    assert aurc(conf, correct) == pytest.approx((0 + 1 / 2 + 1 / 3 + 1 / 4) / 4)
    # oracle with one error of four: risks 0, 0, 0, 1/4
    assert optimal_aurc(4, 1) == pytest.approx(1 / 16)
    assert eaurc(conf, correct) == pytest.approx(aurc(conf, correct) - 1 / 16)
    # a perfect ranking has E-AURC 0
    assert eaurc(np.array([4.0, 3, 2, 1]), np.array([True, True, True, False])) == pytest.approx(0.0)


def test_risk_coverage_ties_are_order_free() -> None:
    conf = np.array([0.5, 0.5, 0.5, 0.5])
    a = risk_coverage(conf, np.array([True, False, True, True]))
    b = risk_coverage(conf, np.array([False, True, True, True]))
    assert a.risk == pytest.approx(b.risk) and a.risk == pytest.approx([0.25] * 4)


def test_selective_threshold_fitted_on_validation() -> None:
    val = np.arange(10, dtype=float)  # 0..9
    t = threshold_for_coverage(val, 0.8)
    assert t == 2.0 and np.mean(val >= t) == 0.8
    test_c = np.array([9.0, 5.0, 2.5, 1.0])
    r = apply_threshold(test_c, np.array([True, False, True, True]), t)
    assert (r.coverage, r.risk, r.n_accepted) == (0.75, 1 / 3, 3)
    vc = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    vy = np.array([True, True, False, True, False])
    # risks at thresholds 0.9, 0.8, 0.7, 0.6, 0.5: 0, 0, 1/3, 1/4, 2/5
    assert threshold_for_risk(vc, vy, 0.25) == 0.6
    assert threshold_for_risk(vc, vy, 0.0) == 0.8
    assert threshold_for_risk(vc, ~np.ones(5, bool), 0.1) == math.inf


def test_calibration_hand_made_and_sklearn(rng: np.random.Generator) -> None:
    p = np.array([[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.2, 0.2, 0.6], [0.5, 0.4, 0.1]])
    y = np.array([0, 0, 2, 1])
    m = calibration_metrics(p, y, n_bins=10)
    assert m.nll == pytest.approx(-np.mean(np.log([0.7, 0.3, 0.6, 0.4])))
    assert m.nll == pytest.approx(log_loss(y, p, labels=[0, 1, 2]))
    onehot = np.eye(3)[y]
    assert m.brier == pytest.approx(np.mean(((p - onehot) ** 2).sum(1)))
    try:
        assert m.brier == pytest.approx(brier_score_loss(y, p, labels=[0, 1, 2]))
    except (TypeError, ValueError):  # scikit-learn without multi-class Brier
        pass
    p2 = rng.random(50)
    y2 = (rng.random(50) < p2).astype(int)
    from robustlab.uncertainty.calibration import brier

    assert brier(np.c_[1 - p2, p2], y2) == pytest.approx(2 * brier_score_loss(y2, p2))
    # adaptive ECE with 2 equal-mass bins: conf sorted 0.6,0.6,0.7,0.7 ; correct  [T,F,?]
    conf = np.array([0.6, 0.7, 0.6, 0.7])
    corr = np.array([True, True, False, False])
    # bins {0.6, 0.6} acc 1/2 -> |0.5-0.6|, {0.7, 0.7} acc 1/2 -> |0.5-0.7|; weights 1/2
    assert adaptive_ece(conf, corr, n_bins=2) == pytest.approx(0.5 * 0.1 + 0.5 * 0.2)
    # classwise ECE with 1 bin = mean_k |freq(y=k) - mean p_k|
    freq = onehot.mean(0)
    assert classwise_ece(p, y, n_bins=1) == pytest.approx(np.mean(np.abs(freq - p.mean(0))))


def test_temperature_scaling_recovers_temperature_and_ignores_test(rng: np.random.Generator) -> None:
    n, k = 3000, 5
    z = rng.normal(size=(n, k)) * 3
    y = np.array([rng.choice(k, p=row) for row in softmax(z / 2.5)])  # the true temperature is 2.5
    t = fit_temperature(z, y)
    assert t == pytest.approx(2.5, rel=0.1)
    # fitted on validation data only: the function sees no test data at all, and the NLL is minimal
    from robustlab.uncertainty.calibration import nll

    assert nll(scaled_probs(z, t), y) <= min(nll(scaled_probs(z, t * 1.1), y), nll(scaled_probs(z, t / 1.1), y))


def test_temperature_is_not_driven_to_zero_by_error_free_validation(rng: np.random.Generator) -> None:
    z = rng.normal(size=(100, 10))
    y = z.argmax(1)  # every validation prediction correct: NLL decreases as T -> 0, no minimiser
    assert fit_temperature(z, y) == 1.0
    y2 = y.copy()
    y2[:10] = (y2[:10] + 1) % 10  # with errors the minimiser is finite and inside the bounds
    assert 0.05 < fit_temperature(z, y2) < 20


def test_temperature_never_sees_test_data(rng: np.random.Generator) -> None:
    """The protocol fits T, thresholds and conformal quantiles from validation arrays only: the fitted
    state is identical whatever the test data are, even garbage."""
    from robustlab.uncertainty import protocol as U

    zv = rng.normal(size=(400, 10)) * 3
    yv = np.where(rng.random(400) < 0.8, zv.argmax(1), rng.integers(0, 10, 400))
    s = U.Settings(n_boot=0)
    f1 = U.fit(zv, yv, s, rng=np.random.default_rng(0))
    garbage = np.full((50, 10), 1e6) * rng.choice([-1, 1], size=(50, 10))
    rows = U.measure(garbage, rng.integers(0, 10, 50), f1, s, scores=("msp",), rng=np.random.default_rng(1))
    f2 = U.fit(zv, yv, s, rng=np.random.default_rng(0))
    assert f1 == f2 and rows
    assert f1.temperature == fit_temperature(zv[np.sort(np.random.default_rng(0).permutation(400)[:200])], yv[np.sort(np.random.default_rng(0).permutation(400)[:200])])


def test_protocol_reports_error_free_temperature_half(rng: np.random.Generator) -> None:
    from robustlab.uncertainty import protocol as U

    z = rng.normal(size=(60, 10))
    f = U.fit(z, z.argmax(1), U.Settings(n_boot=0), rng=np.random.default_rng(0))
    assert f.temperature == 1.0 and f.errors_in_temperature_half == 0 and f.n_temperature == 30 and f.n_conformal == 30
