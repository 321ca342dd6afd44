"""Checks: clean, adversarial, corruption, ood, certify. Each registers itself in :data:`CHECKS`."""

from .base import CHECKS, Check, Params, RunContext

__all__ = ["CHECKS", "Check", "Params", "RunContext"]
