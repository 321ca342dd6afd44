"""Metric helpers shared by the checks (confidence intervals, calibration, confusion)."""
