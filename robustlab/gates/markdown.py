"""Markdown summary of a gate evaluation (also appended to ``$GITHUB_STEP_SUMMARY``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .rules import GateReport, Outcome, distinct

if TYPE_CHECKING:
    from ..scorecard import Scorecard

log = logging.getLogger(__name__)

_ICON = {Outcome.PASS: "✅ pass", Outcome.FAIL: "❌ FAIL", Outcome.INCONCLUSIVE: "⚠️ inconclusive", Outcome.SKIPPED: "⏭️ skipped"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.4g}"


def markdown_summary(report: GateReport, card: "Scorecard | None" = None) -> str:
    """A GitHub-flavoured markdown table: one row per rule, the overall outcome first."""
    lines = [f"## robustlab release gate: {_ICON[report.outcome]} (exit {report.exit_code})", ""]
    if card is not None:
        lines.append(
            f"Model `{card.model.get('spec', '?')}` (sha256 `{str(card.model.get('sha256') or '?')[:16]}…`), "
            f"data `{card.data.get('spec', '?')}`, suite `{card.suite.get('name', '?')}`, seed {card.run.get('seed', '?')}."
        )
    if report.policy_source:
        lines.append(f"Policy `{report.policy_source}`" + (f", baseline `{report.baseline_source}`." if report.baseline_source else ", no baseline."))
    lines += ["", "| outcome | rule | observed | threshold | baseline | detail |", "|---|---|---|---|---|---|"]
    for r in report.results:
        obs, thr = distinct(r.observed, r.threshold) if r.observed is not None and r.threshold is not None else (_num(r.observed), _num(r.threshold))
        lines.append(f"| {_ICON[r.outcome]} | {_cell(r.name)} | {obs} | {thr} | {_num(r.baseline)} | {_cell(r.message)} |")
    lines += ["", f"{report.count(Outcome.PASS)} passed, {report.count(Outcome.FAIL)} failed, {report.count(Outcome.INCONCLUSIVE)} inconclusive, {report.count(Outcome.SKIPPED)} skipped.", ""]
    return "\n".join(lines)


def append_step_summary(text: str) -> Path | None:
    """Append ``text`` to ``$GITHUB_STEP_SUMMARY`` when that variable is set; return the path."""
    target = os.environ.get("GITHUB_STEP_SUMMARY")
    if not target:
        return None
    p = Path(target)
    try:
        with p.open("a", encoding="utf-8") as f:
            f.write(text if text.endswith("\n") else text + "\n")
    except OSError as exc:  # the CI runner's file, not the gate's input: the verdict (exit code) stands
        log.warning("could not append the gate summary to $GITHUB_STEP_SUMMARY (%s: %s); the gate's exit code is unchanged", p, exc.strerror or exc)
        return None
    return p
