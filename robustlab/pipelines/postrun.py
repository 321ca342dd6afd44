"""What happens after a scorecard is written: gates, report, MLflow (called by ``evaluate`` and ``defend``).

Order: (1) apply the gate policy (JUnit XML, markdown summary, ``$GITHUB_STEP_SUMMARY``), so that
(2) the HTML report shows the gate outcome, then (3) log everything to MLflow with the gate verdict as
a tag. Only a :class:`~robustlab.scorecard.Scorecard` is read; no torch import.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from ..errors import RobustlabError
from ..scorecard import Scorecard

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PostRunOptions:
    """What to do with a written scorecard (see :func:`after_run` for each field)."""

    policy: Path | None = None
    baseline: str | None = None
    junit: Path | None = None
    mlflow: bool = True
    mlflow_uri: str | None = None
    report: bool = True
    trusted_keys: tuple[Path, ...] = ()  # for a policy with `signature: required` (besides $ROBUSTLAB_TRUSTED_KEYS)
    baseline_in_run: bool = False  # the baseline was written by this same command (the base of --variants)


def after_run(
    card: Scorecard,
    out_dir: Path,
    *,
    policy: Path | None,
    baseline: str | None,
    junit: Path | None,
    mlflow: bool,
    mlflow_uri: str | None,
    command: str,
    model_path: Path | None,
    artifacts: list[Path],
    report: bool = True,
    trusted_keys: tuple[Path, ...] = (),
    baseline_in_run: bool = False,
) -> int:
    """Write ``report.html`` (and gate outputs) into ``out_dir``, log to MLflow; return the exit code.

    Args:
        card: the scorecard just written to ``out_dir / "scorecard.json"``.
        out_dir: the run's output folder.
        policy: gate policy YAML (``None``: no gate; exit code 0, or 3 when a check errored).
        baseline: baseline scorecard path or MLflow run id for regression rules.
        junit: where to write JUnit XML (default ``out_dir / "junit.xml"`` when a policy is given).
        mlflow: log to MLflow (``False`` with ``--no-mlflow``).
        mlflow_uri: tracking URI (else ``$MLFLOW_TRACKING_URI``, else the embedded SQLite store in
            ``out_dir``).
        command: the exact command line, shown in the report and tagged in MLflow.
        model_path: the model file, when there is one: its sha256 is compared with the scorecard's
            and a mismatch is logged as a warning.
        artifacts: further files to attach to the MLflow run.
        report: write ``report.html`` (``False`` for ``--no-report``).
        trusted_keys: trusted public keys for a policy with ``signature: required`` (the baseline must
            be signed by one; the card itself is gated by the run that made it).
        baseline_in_run: the baseline was written by this same command (the base of ``--variants``),
            so a policy's signature requirement does not apply to it.

    Returns:
        0 pass (or no policy and every check ran), 1 a gate failed, 3 inconclusive (without a policy:
        a check errored, so the scorecard lacks what the suite asked for). Policy and baseline errors raise
        :class:`~robustlab.errors.RobustlabError` (exit 2).
    """
    from ..report import write_report

    out_dir = Path(out_dir)
    scorecard_path = out_dir / "scorecard.json"
    gate = None
    code = 0
    files: list[Path] = []
    if policy is not None:
        from .gate import Trust, apply_gate

        outcome = apply_gate(card, Path(policy), baseline=baseline, mlflow_uri=mlflow_uri, baseline_dir=out_dir,
                             trust=Trust(trusted_keys=tuple(trusted_keys)), baseline_in_run=baseline_in_run,
                             junit=Path(junit) if junit else out_dir / "junit.xml", markdown_path=out_dir / "gate-summary.md")
        gate = outcome.report
        files += list(outcome.files)
        code = outcome.exit_code
        log.info("gate %s (exit %d); JUnit %s", gate.outcome.value, code, outcome.files[0])
    else:
        if baseline:
            log.warning("--baseline %s is ignored without --policy", baseline)
        errored = card.errored_checks()
        if errored:  # no gate, but the run did not produce what the suite asked for: not a success
            code = 3
            log.warning("%d check(s) errored, so the scorecard is incomplete (exit 3, inconclusive): %s; fix the cause and rerun "
                        "with --resume (finished batches are kept), or gate with a --policy whose checks.error is allow",
                        len(errored), "; ".join(f"{c.id}: {' '.join((c.reason or 'error').split())[:200]}" for c in errored))
    if model_path is not None and Path(model_path).is_file() and card.model.get("sha256"):
        from ..signing import sha256_file

        if sha256_file(model_path) != str(card.model["sha256"]).lower():
            log.warning("model file %s does not match the scorecard's model sha256", model_path)
    verification = None
    if card.signature and scorecard_path.is_file():
        from ..signing import verify_scorecard

        verification = verify_scorecard(scorecard_path)
    if report:
        files.insert(0, write_report(card, out_dir / "report.html", gate=gate, verification=verification, command=command))
    if mlflow:
        from ..tracking import log_scorecard

        try:
            run_id = log_scorecard(
                card,
                out_dir=out_dir,
                uri=mlflow_uri,
                artifacts=[*files, *artifacts],
                verdict=gate.outcome.value if gate is not None else "not-gated",
                command=command,
                scorecard_path=scorecard_path if scorecard_path.is_file() else None,
            )
            log.info("MLflow run %s", run_id)
        except Exception as exc:  # noqa: BLE001 - tracking trouble must not turn a finished run into a crash
            # the scorecard (and report) are written: warn in one line and keep the run's exit code
            why = str(exc) if isinstance(exc, RobustlabError) else f"MLflow logging failed ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})"
            log.warning("%s; the scorecard stands in %s (not recorded in MLflow).", why.rstrip("."), out_dir)
    return code
