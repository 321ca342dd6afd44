"""The gate pipeline: policy + scorecard (+ baseline) -> verdict, and the files that report it.

One place for what ``robustlab evaluate --policy``, ``robustlab gate`` and ``robustlab report
--policy`` do with a policy: load it, load the baseline (a file or an MLflow run), evaluate every
rule, then (for the gate proper) write the JUnit XML and the markdown summary and append it to
``$GITHUB_STEP_SUMMARY``. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..gates import GateReport, RuleResult
    from ..scorecard import Scorecard
    from ..signing import Verification


@dataclass(frozen=True)
class Trust:
    """Whom the gate trusts when its policy says ``signature: required``: ``--public-key``,
    ``--trusted-keys`` (``.pem`` files or folders of them) and ``$ROBUSTLAB_TRUSTED_KEYS``, read only
    when a policy needs them; and the gated scorecard's detached signature (default ``SCORECARD.sig``
    when it embeds none)."""

    public_key: Path | None = None
    trusted_keys: tuple[Path, ...] = ()
    signature_path: Path | None = None
    raw_keys: tuple[bytes, ...] = ()  # keys held elsewhere (the service's trust store)
    use_env: bool = True

    def keys(self) -> tuple[bytes, ...]:
        from ..signing import load_public_key, trust_store

        files = ([load_public_key(self.public_key)] if self.public_key else []) + trust_store(list(self.trusted_keys), use_env=self.use_env)
        return self.raw_keys + tuple(files)


def _signature_result(what: str, source: str, v: "Verification") -> "RuleResult":
    from ..gates import Outcome, RuleResult
    from ..signing import SignatureState

    ok = v.state is SignatureState.VALID_TRUSTED
    msg = f"{what} {source}: {v.state.value}: {'; '.join(v.messages)}"
    if not ok:
        msg += f"; the policy requires the {what} signed by a trusted key (`robustlab sign`, then pass the signer's key with --public-key or --trusted-keys)"
    return RuleResult(f"signature: {what} signed by a trusted key", "signature", Outcome.PASS if ok else Outcome.FAIL, msg,
                      details={"state": v.state.value, "key_id": v.key_id or ""})


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
                baseline_dir: Path | None = None, scorecard_path: Path | None = None, trust: Trust | None = None,
                baseline_in_run: bool = False) -> "GateReport":
    """Evaluate ``policy`` on ``card``; ``baseline`` is a scorecard path or an MLflow run reference
    (``baseline_dir``: where an embedded MLflow store is looked for). Bad policies or baselines raise
    :class:`~robustlab.errors.RobustlabError` (exit 2).

    A baseline whose signature does not match it is refused, a file or an MLflow run's scorecard. With
    ``signature: required`` in the policy, the scorecard file ``scorecard_path`` and the baseline must
    each be signed by a key of ``trust`` (default: ``$ROBUSTLAB_TRUSTED_KEYS``), or their rule fails;
    a card gated by the run that made it (``scorecard_path`` None) has no file to sign and passes it,
    as does a baseline written by the same command (``baseline_in_run``: the base of ``--variants``).
    """
    from ..errors import RobustlabError
    from ..gates import Outcome, Requirement, RuleResult, evaluate_policy, load_policy
    from ..signing import broken_signature, verify_file

    pol = load_policy(policy)
    required = pol.signature is Requirement.REQUIRED
    trust = trust or Trust()
    keys = trust.keys() if required else ()
    if required and not keys and (scorecard_path is not None or (baseline and not baseline_in_run)):
        raise RobustlabError(f"policy {policy} requires scorecards signed by a trusted key, but no key is trusted: pass the signer's "
                             "--public-key or --trusted-keys FILE|DIR, or set $ROBUSTLAB_TRUSTED_KEYS.")
    signatures: list[RuleResult] = []
    if required:
        if scorecard_path is None:
            signatures.append(RuleResult("signature: scorecard signed by a trusted key", "signature", Outcome.PASS,
                                         "scorecard gated by the run that made it (no file stood between the run and the gate)"))
        else:
            signatures.append(_signature_result("scorecard", str(scorecard_path), verify_file(scorecard_path, trusted_keys=keys,
                                                                                               signature_path=trust.signature_path)))
    base = None
    if baseline:
        from ..tracking import load_baseline

        def check(local: Path) -> None:
            why = broken_signature(local)
            if why:
                raise RobustlabError(f"baseline {baseline} carries a signature that does not match it ({why.rstrip('.')}); "
                                     "use the baseline as it was signed, or re-sign it.")
            if required and baseline_in_run:
                signatures.append(RuleResult("signature: baseline signed by a trusted key", "signature", Outcome.PASS,
                                             f"baseline {baseline} written by this same command"))
            elif required:
                signatures.append(_signature_result("baseline", baseline, verify_file(local, trusted_keys=keys)))

        base = load_baseline(baseline, uri=mlflow_uri, out_dir=baseline_dir, check_file=check)
    report = evaluate_policy(card, pol, baseline=base, baseline_source=baseline or "")
    return replace(report, results=tuple(signatures) + report.results)


def apply_gate(card: "Scorecard", policy: Path, *, baseline: str | None = None, mlflow_uri: str | None = None, baseline_dir: Path | None = None,
               junit: Path | None = None, markdown_path: Path | None = None, scorecard_path: Path | None = None,
               trust: Trust | None = None, baseline_in_run: bool = False) -> GateOutcome:
    """:func:`gate_report`, then write ``junit`` and ``markdown_path`` (each when given) and append
    the markdown summary to ``$GITHUB_STEP_SUMMARY`` (when set)."""
    from ..gates.junit import write_junit
    from ..gates.markdown import append_step_summary, markdown_summary
    from ..scorecard import atomic_write_text

    report = gate_report(card, policy, baseline=baseline, mlflow_uri=mlflow_uri, baseline_dir=baseline_dir, scorecard_path=scorecard_path, trust=trust,
                         baseline_in_run=baseline_in_run)
    md = markdown_summary(report, card)
    files: list[Path] = []
    if junit is not None:
        files.append(write_junit(report, junit, card))
    if markdown_path is not None:
        files.append(atomic_write_text(Path(markdown_path), md))
    append_step_summary(md)
    return GateOutcome(report, md, tuple(files))
