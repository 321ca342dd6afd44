"""OOD metrics equal scikit-learn's (and pytorch-ood's, where the conventions agree)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from robustlab.ood.metrics import fpr_at_tpr, ood_metrics, rejection_rate, roc_points, threshold_at_tpr


def _scores(rng: np.random.Generator, n_id: int, n_ood: int, shift: float, *, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    a = rng.normal(0.0, 1.0, n_id)
    b = rng.normal(shift, 1.0, n_ood)
    if ties:  # coarse scores: many ties within and across the two sets
        a, b = np.round(a, 1), np.round(b, 1)
    return a, b


def _sklearn_fpr95(a: np.ndarray, b: np.ndarray, tpr: float = 0.95) -> float:
    """ODIN convention via sklearn: ID positive with -score; FPR at the first ROC point with TPR >= tpr."""
    y = np.concatenate([np.ones(a.size), np.zeros(b.size)])
    fpr, tp, _ = roc_curve(y, -np.concatenate([a, b]), drop_intermediate=False)
    return float(fpr[np.searchsorted(tp, tpr - 1e-12, side="left")])


@pytest.mark.parametrize("n_id,n_ood,shift,ties", [(20, 20, 1.0, False), (500, 137, 1.5, False), (300, 300, 0.3, True), (41, 999, 2.0, True)])
def test_metrics_equal_sklearn(rng: np.random.Generator, n_id: int, n_ood: int, shift: float, ties: bool) -> None:
    a, b = _scores(rng, n_id, n_ood, shift, ties=ties)
    m = ood_metrics(a, b)
    s = np.concatenate([a, b])
    y_ood = np.concatenate([np.zeros(a.size), np.ones(b.size)])
    assert m.auroc == pytest.approx(roc_auc_score(y_ood, s), abs=1e-12)
    assert m.aupr_out == pytest.approx(average_precision_score(y_ood, s), abs=1e-12)
    assert m.aupr_in == pytest.approx(average_precision_score(1 - y_ood, -s), abs=1e-12)
    assert m.fpr95 == pytest.approx(_sklearn_fpr95(a, b), abs=1e-12)
    assert (m.n_id, m.n_ood) == (n_id, n_ood)


def test_metrics_equal_pytorch_ood(rng: np.random.Generator) -> None:
    torch = pytest.importorskip("torch")
    F = pytest.importorskip("pytorch_ood.metrics.functional")
    for ties in (False, True):
        a, b = _scores(rng, 400, 250, 1.2, ties=ties)
        s = torch.tensor(np.concatenate([a, b]))
        labels = torch.cat([torch.zeros(a.size, dtype=torch.long), -torch.ones(b.size, dtype=torch.long)])  # OOD: label < 0
        m = ood_metrics(a, b)
        assert m.auroc == pytest.approx(float(F.auroc(s, labels)), abs=1e-12)
        # pytorch-ood's FPR@TPR has OOD as the positive class; the ODIN convention is its mirror image
        # (ID positive, -score), which we get by swapping the roles of the two sets.
        swapped = torch.cat([-torch.ones(a.size, dtype=torch.long), torch.zeros(b.size, dtype=torch.long)])
        assert m.fpr95 == pytest.approx(float(F.fpr_at_tpr(-s, swapped, 0.95)), abs=1e-12)


def test_fpr95_known_values() -> None:
    a = np.arange(100, dtype=float)  # ID scores 0..99: the 95% threshold is 94
    assert threshold_at_tpr(a, 0.95) == 94.0
    assert fpr_at_tpr(a, np.array([94.0, 94.5, 200.0, -1.0]), 0.95) == 0.5  # 94 and -1 accepted
    assert rejection_rate(np.array([94.0, 94.5, 200.0, -1.0]), 94.0) == 0.5
    assert ood_metrics(a, a + 1000).auroc == 1.0 and ood_metrics(a, a + 1000).fpr95 == 0.0
    assert ood_metrics(a + 1000, a).auroc == 0.0 and ood_metrics(a + 1000, a).fpr95 == 1.0
    assert ood_metrics(np.zeros(10), np.zeros(10)).auroc == 0.5


def test_threshold_accepts_target_fraction(rng: np.random.Generator) -> None:
    for n in (1, 7, 20, 333):
        a = rng.normal(size=n)
        t = threshold_at_tpr(a, 0.95)
        assert np.mean(a <= t) >= 0.95
        assert np.mean(a < t) < 0.95  # the smallest such threshold


def test_roc_points_shape_and_monotone(rng: np.random.Generator) -> None:
    a, b = _scores(rng, 200, 150, 1.0)
    x, y = roc_points(a, b)
    assert len(x) == len(y) == 101 and x[0] == 0.0 and x[-1] == 1.0
    assert all(y1 >= y0 for y0, y1 in itertools.pairwise(y)) and y[-1] == 1.0
    area = float(np.trapezoid(y, x)) if hasattr(np, "trapezoid") else float(np.trapz(y, x))
    assert area == pytest.approx(ood_metrics(a, b).auroc, abs=0.02)


def test_metrics_reject_bad_input() -> None:
    with pytest.raises(ValueError):
        ood_metrics(np.array([]), np.array([1.0]))
    with pytest.raises(ValueError):
        ood_metrics(np.array([math.nan]), np.array([1.0]))
