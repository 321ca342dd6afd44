"""OOD detection metrics (numpy + scikit-learn; no torch).

Conventions (stated in every scorecard, see :data:`DEFINITIONS`): scores are higher for more likely
OOD inputs. AUROC and AUPR-Out treat OOD as the positive class; AUPR-In treats in-distribution (ID)
as positive with the negated score. AUPR is scikit-learn's average precision (step-wise), not the
trapezoidal area OpenOOD and pytorch-ood report. FPR@95TPR follows the ODIN convention: the
fraction of OOD samples accepted (score <= t) at the smallest threshold t that accepts at least 95%
of the ID samples (OpenOOD v1.5 swaps the roles of ID and OOD).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFINITIONS: dict[str, str] = {
    "score": "Detector score: higher means more likely out-of-distribution (OOD). An input is accepted as in-distribution (ID) when score <= threshold.",
    "auroc": "AUROC: area under the ROC curve with OOD as the positive class (sklearn.metrics.roc_auc_score); 0.5 is chance.",
    "aupr_in": "AUPR-In: average precision (sklearn.metrics.average_precision_score, step-wise) with ID as the positive class and -score as its score.",
    "aupr_out": "AUPR-Out: average precision (sklearn.metrics.average_precision_score, step-wise) with OOD as the positive class.",
    "fpr95": "FPR@95TPR (ODIN convention): fraction of OOD samples accepted (score <= t) at the smallest threshold t that accepts at least 95% of the ID test samples. OpenOOD v1.5 swaps the positive class; this is not that.",
    "threshold": "Deployable threshold: the smallest score t that accepts at least the target TPR (default 95%) of the ID validation samples (not the test samples).",
    "rejection_rate": "Rejection rate: fraction of a set's samples with score > deployable threshold (flagged OOD); interval: Wilson 95% for that proportion given the threshold.",
    "id_acceptance": "ID acceptance: fraction of ID test samples accepted at the deployable threshold (should be close to the target TPR).",
    "near/far": "near/ and far/ metrics are unweighted means over the OOD sets of that group; their sample count n is the size of the smallest of those sets.",
}


@dataclass(frozen=True)
class OODMetrics:
    """Detection metrics of one detector on one ID/OOD pair."""

    auroc: float
    aupr_in: float
    aupr_out: float
    fpr95: float
    n_id: int
    n_ood: int


def _arrays(id_scores: np.ndarray, ood_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(id_scores, dtype=np.float64).reshape(-1)
    b = np.asarray(ood_scores, dtype=np.float64).reshape(-1)
    if a.size == 0 or b.size == 0:
        raise ValueError("OOD metrics need at least one ID and one OOD score")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("OOD scores must be finite")
    return a, b


def threshold_at_tpr(id_scores: np.ndarray, tpr: float = 0.95) -> float:
    """Smallest t with mean(id_scores <= t) >= tpr (an ID order statistic)."""
    a = np.sort(np.asarray(id_scores, dtype=np.float64).reshape(-1))
    if a.size == 0:
        raise ValueError("threshold_at_tpr needs ID scores")
    if not 0 < tpr <= 1:
        raise ValueError(f"tpr must be in (0, 1], got {tpr}")
    k = max(1, math.ceil(tpr * a.size - 1e-9))
    return float(a[k - 1])


def fpr_at_tpr(id_scores: np.ndarray, ood_scores: np.ndarray, tpr: float = 0.95) -> float:
    """Fraction of OOD scores <= :func:`threshold_at_tpr` of the ID scores (ODIN convention)."""
    a, b = _arrays(id_scores, ood_scores)
    return float(np.mean(b <= threshold_at_tpr(a, tpr)))


def rejection_rate(scores: np.ndarray, threshold: float) -> float:
    """Fraction of scores above ``threshold`` (flagged OOD)."""
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    return float(np.mean(s > threshold)) if s.size else math.nan


def ood_metrics(id_scores: np.ndarray, ood_scores: np.ndarray, *, tpr: float = 0.95) -> OODMetrics:
    """AUROC, AUPR-In, AUPR-Out and FPR@TPR for ID scores (n,) and OOD scores (m,).

    References: Hendrycks & Gimpel 2017 (metric set); Liang et al. 2018 (FPR@95TPR convention);
        values equal ``sklearn.metrics`` and, for AUROC and FPR, ``pytorch_ood.metrics.functional``.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    a, b = _arrays(id_scores, ood_scores)
    s = np.concatenate([a, b])
    is_ood = np.concatenate([np.zeros(a.size), np.ones(b.size)])
    return OODMetrics(
        auroc=float(roc_auc_score(is_ood, s)),
        aupr_in=float(average_precision_score(1 - is_ood, -s)),
        aupr_out=float(average_precision_score(is_ood, s)),
        fpr95=fpr_at_tpr(a, b, tpr),
        n_id=int(a.size),
        n_ood=int(b.size),
    )


def roc_points(id_scores: np.ndarray, ood_scores: np.ndarray, *, points: int = 101) -> tuple[list[float], list[float]]:
    """ROC (OOD positive) resampled on a uniform FPR grid of ``points`` values in [0, 1].

    Returns (fpr grid, tpr at each grid value: the best TPR reachable at FPR <= grid value).
    """
    from sklearn.metrics import roc_curve

    a, b = _arrays(id_scores, ood_scores)
    is_ood = np.concatenate([np.zeros(a.size), np.ones(b.size)])
    fpr, tpr, _ = roc_curve(is_ood, np.concatenate([a, b]), drop_intermediate=False)
    grid = np.linspace(0.0, 1.0, points)
    idx = np.searchsorted(fpr, grid, side="right") - 1
    return [float(g) for g in grid], [float(tpr[i]) for i in idx]
