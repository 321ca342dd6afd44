"""After a job's evaluate run exits 0/1/3: sign the scorecard with the service key, verify it
against the trust store, take the gate decision from the gate pipeline, re-render the report with
both, and store scorecard, signature, report, per-sample CSV, JUnit, gate summary and environment
as the job's evidence. One transaction records the scorecard, so a job has exactly one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..signing import sha256_file
from .artifacts import path_of, store_file
from .models import Job, ScorecardSource, StoredScorecard
from .settings import Settings

#: the headline metrics a model page plots (the first key found under each prefix/suffix)
HEADLINE = (("clean/", "/accuracy"), ("adversarial/", "/robust_accuracy"), ("corruption/", "/accuracy"), ("ood/", "/auroc"), ("certify/", "/certified_accuracy"))


def headline(card: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for check in card.get("checks") or []:
        for k, v in (check.get("metrics") or {}).items():
            if isinstance(v, (int, float)) and "/class_" not in k and any(k.startswith(a) and k.endswith(b) for a, b in HEADLINE):
                out.setdefault(k, float(v))
    return dict(sorted(out.items())[:40])


def _public(obj: Any, data_dir: str) -> Any:
    from ..parsing import redact_credentials

    if isinstance(obj, str):
        return redact_credentials(obj.replace(data_dir, "DATA"))
    if isinstance(obj, list):
        return [_public(v, data_dir) for v in obj]
    if isinstance(obj, dict):
        return {k: _public(v, data_dir) for k, v in obj.items()}
    return obj


def public_scorecard(path: Path, settings: Settings) -> None:
    """Before signing: every string of the job's scorecard (the command, the model spec, ...) names the
    service's data folder as ``DATA`` and no URL password, so auditors and other readers of the signed
    card, its report and pages learn neither the server's paths nor the tracking server's credentials."""
    from ..jsonio import atomic_write_text
    from ..scorecard import read_strict_json

    raw = read_strict_json(path)
    clean = _public(raw, str(settings.data_dir))
    if clean != raw:
        atomic_write_text(path, json.dumps(clean, indent=1, ensure_ascii=False, allow_nan=False))


def finalize(s: Session, settings: Settings, job: Job, out: Path, *, exit_code: int, baseline_path: Path | None) -> StoredScorecard:
    """Record the finished run in ``out`` for ``job`` (caller commits)."""
    from ..report import write_report
    from ..scorecard import Scorecard, read_strict_json
    from ..signing import sign_scorecard
    from ..tracking.mlflow_log import write_per_sample_csv
    from .trust import verify_card

    sc_path = out / "scorecard.json"
    public_scorecard(sc_path, settings)
    sign_scorecard(sc_path, settings.key_path)
    raw: dict[str, Any] = read_strict_json(sc_path)
    card = Scorecard.from_dict(raw)
    verification = verify_card(s, raw)
    gate = None
    if job.policy_key:
        from ..pipelines.gate import Trust, gate_report
        from .trust import trusted_keys

        gate = gate_report(card, path_of(settings.artifact_dir, job.policy_key), baseline=str(baseline_path) if baseline_path else None, baseline_dir=out,
                           scorecard_path=sc_path, trust=Trust(raw_keys=tuple(trusted_keys(s)), use_env=False))
    cmd = str(card.run.get("command", ""))
    write_report(card, out / "report.html", gate=gate, verification=verification, command=cmd)
    sig = out / "signature.json"
    sig.write_text(json.dumps(raw.get("signature"), indent=1) + "\n", encoding="utf-8")
    csv = write_per_sample_csv(card.in_key_schema(), out / "per_sample.csv")
    from .runjob import environment_json

    env = environment_json(raw, out / "environment.json")
    files: list[tuple[str, Path | None, str]] = [("scorecard", sc_path, "scorecard.json"), ("signature", sig, "signature.json"),
                                                 ("report", out / "report.html", "report.html"), ("samples", csv, "per_sample.csv"),
                                                 ("junit", out / "junit.xml", "junit.xml"), ("gate", out / "gate-summary.md", "gate-summary.md"),
                                                 ("environment", env, "environment.json")]
    version_id = job.version_id
    stored = StoredScorecard(project_id=job.project_id, job_id=job.id, version_id=version_id, source=ScorecardSource.SERVICE,
                             artifact_key=f"jobs/{job.id}/scorecard.json", sha256=sha256_file(sc_path), signature_state=verification.state.value,
                             signature_key_id=verification.key_id, signature_message="; ".join(verification.messages)[:2000],
                             gate_outcome=gate.outcome.value if gate is not None else None, gate_exit_code=gate.exit_code if gate is not None else exit_code,
                             headline=headline(raw))
    s.add(stored)
    s.flush()  # the unique job_id: a second scorecard for this job fails here, before any file is stored
    for kind, path, name in files:
        if path is not None and path.is_file():
            store_file(s, settings.artifact_dir, path, f"jobs/{job.id}/{name}", kind=kind, project_id=job.project_id, job_id=job.id, scorecard_id=stored.id)
    return stored


def baseline_path(s: Session, settings: Settings, job: Job) -> Path | None:
    if not job.baseline:
        return None
    key = s.scalar(select(StoredScorecard.artifact_key).where(StoredScorecard.job_id == job.baseline))
    return path_of(settings.artifact_dir, key) if key else None
