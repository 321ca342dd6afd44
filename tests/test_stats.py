import math

import numpy as np
import pytest
from scipy.stats import binomtest

from robustlab.stats import clopper_pearson_interval, confusion_matrix, expected_calibration_error, wilson_interval


@pytest.mark.parametrize("k,n", [(0, 10), (5, 10), (93, 100), (360, 360), (937, 1000)])
def test_wilson_matches_scipy(k, n):
    ours = wilson_interval(k, n)
    ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    assert ours.low == pytest.approx(ref.low, abs=1e-9) and ours.high == pytest.approx(ref.high, abs=1e-9)


@pytest.mark.parametrize("k,n", [(0, 10), (7, 10), (99, 100)])
def test_clopper_pearson_matches_scipy(k, n):
    ours = clopper_pearson_interval(k, n)
    ref = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    assert ours.low == pytest.approx(ref.low, abs=1e-9) and ours.high == pytest.approx(ref.high, abs=1e-9)


def test_ece_closed_form():
    # all predictions at confidence 0.8, 60% correct -> ECE = 0.2
    conf = np.full(10, 0.8)
    correct = np.array([1] * 6 + [0] * 4, dtype=bool)
    assert expected_calibration_error(conf, correct) == pytest.approx(0.2)
    # perfectly calibrated two bins
    conf = np.array([0.25] * 4 + [0.75] * 4)
    correct = np.array([1, 0, 0, 0, 1, 1, 1, 0], dtype=bool)
    assert expected_calibration_error(conf, correct, n_bins=4) == pytest.approx(0.0)


def test_ece_against_direct_loop(rng):
    conf = rng.uniform(0.1, 1.0, 500)
    correct = rng.uniform(size=500) < conf ** 2
    bins = np.linspace(0, 1, 16)
    ref = 0.0
    for lo, hi in zip(bins[:-1], bins[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            ref += m.mean() * abs(correct[m].mean() - conf[m].mean())
    assert expected_calibration_error(conf, correct) == pytest.approx(ref, abs=1e-12)


def test_confusion_matrix_matches_sklearn(rng):
    from sklearn.metrics import confusion_matrix as sk

    y = rng.integers(0, 5, 200)
    p = rng.integers(0, 5, 200)
    assert (confusion_matrix(y, p, 5) == sk(y, p, labels=range(5))).all()
    assert math.isnan(wilson_interval(0, 0).low)
