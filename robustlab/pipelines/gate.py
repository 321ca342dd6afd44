"""The gate pipeline: policy + scorecard (+ baseline) -> verdict, and the files that report it.

One place for what ``robustlab evaluate --policy``, ``robustlab gate`` and ``robustlab report
--policy`` do with a policy: load it, load the baseline (a file or an MLflow run), evaluate every
rule, then (for the gate proper) write the JUnit XML and the markdown summary and append it to
``$GITHUB_STEP_SUMMARY``. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..gates import GateReport
    from ..scorecard import Scorecard


@dataclass(frozen=True)
class GateOutcome:
    """The gate's report, its markdown summary and the files written (JUnit XML, markdown)."""

    report: "GateReport"
    markdown: str
    files: tuple[Path, ...]

    @property
    def exit_code(self) -> int:
        return self.report.exit_code


def gate_report(card: "Scorecard", policy: Path, *, baseline: str | None = None, mlflow_uri: str | None = None,
                baseline_dir: Path | None = None) -> "GateReport":
    """Evaluate ``policy`` on ``card``; ``baseline`` is a scorecard path or an MLflow run reference
    (``baseline_dir``: where an embedded MLflow store is looked for). Bad policies or baselines raise
    :class:`~robustlab.errors.RobustlabError` (exit 2)."""
    from ..gates import evaluate_policy, load_policy

    pol = load_policy(policy)
    base = None
    if baseline:
        from ..errors import RobustlabError
        from ..signing import broken_signature
        from ..tracking import load_baseline

        base = load_baseline(baseline, uri=mlflow_uri, out_dir=baseline_dir)
        why = broken_signature(baseline) if Path(baseline).is_file() else None
        if why:
            raise RobustlabError(f"baseline {baseline} carries a signature that does not match it ({why.rstrip('.')}); "
                                 "use the baseline as it was signed, or re-sign it.")
    return evaluate_policy(card, pol, baseline=base, baseline_source=baseline or "")


def apply_gate(card: "Scorecard", policy: Path, *, baseline: str | None = None, mlflow_uri: str | None = None, baseline_dir: Path | None = None,
               junit: Path | None = None, markdown_path: Path | None = None) -> GateOutcome:
    """:func:`gate_report`, then write ``junit`` and ``markdown_path`` (each when given) and append
    the markdown summary to ``$GITHUB_STEP_SUMMARY`` (when set)."""
    from ..gates.junit import write_junit
    from ..gates.markdown import append_step_summary, markdown_summary
    from ..scorecard import atomic_write_text

    report = gate_report(card, policy, baseline=baseline, mlflow_uri=mlflow_uri, baseline_dir=baseline_dir)
    md = markdown_summary(report, card)
    files: list[Path] = []
    if junit is not None:
        files.append(write_junit(report, junit, card))
    if markdown_path is not None:
        files.append(atomic_write_text(Path(markdown_path), md))
    append_step_summary(md)
    return GateOutcome(report, md, tuple(files))
