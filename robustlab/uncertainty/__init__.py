"""Uncertainty algorithms (numpy only, no torch): confidence scores, failure detection, selective
prediction, calibration with temperature scaling, and split conformal prediction sets.

Every function takes arrays and returns floats or frozen dataclasses; nothing here imports checks,
the runner or the scorecard. The ``uncertainty`` check (``robustlab.checks.uncertainty``) applies
them to clean, corrupted, shifted, adversarial and OOD data.
"""

from .scores import CONFIDENCE_SCORES, confidence, softmax
from .conformal import CONFORMAL_METHODS

__all__ = ["CONFIDENCE_SCORES", "CONFORMAL_METHODS", "confidence", "softmax"]
