"""Validity audits: evidence that a robustness figure can be trusted, reported as
:class:`~robustlab.scorecard.AuditItem` results (never as log lines)."""

from __future__ import annotations
