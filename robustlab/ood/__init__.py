"""Out-of-distribution detection: detectors (``DETECTORS``), metrics, offline OOD sources, fit cache.

Score convention: higher means more likely out-of-distribution.
"""

from __future__ import annotations

from .base import DETECTORS, Detector, DetectorError, FitFeatures, create_detector, extract_fit_features
from .metrics import OODMetrics, fpr_at_tpr, ood_metrics, rejection_rate, roc_points, threshold_at_tpr

__all__ = [
    "DETECTORS",
    "Detector",
    "DetectorError",
    "FitFeatures",
    "OODMetrics",
    "create_detector",
    "extract_fit_features",
    "fpr_at_tpr",
    "ood_metrics",
    "rejection_rate",
    "roc_points",
    "threshold_at_tpr",
]
