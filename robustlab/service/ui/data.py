"""What the UI pages read: the signed-in principal, visible projects, models, versions and their
evaluations, stored scorecards (with a live check of their signature against the trust store)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from ..artifacts import path_of
from ..auth import AuthError, Principal
from ..models import Artifact, Job, Model, Project, Role, StoredScorecard, Version

if TYPE_CHECKING:
    from ...scorecard import Scorecard
    from ...signing import Verification


def signed_in(request: Request) -> Principal:
    """The session's principal (401, turned into a redirect to the sign-in page, otherwise)."""
    from ..sessions import session_principal

    p = session_principal(request)
    if p is None:
        raise AuthError(401, "sign in first")
    return p


def artifact_root(request: Request) -> Path:
    from ..app import state_of

    return state_of(request).settings.artifact_dir


def visible_projects(s: Session, p: Principal) -> list[Project]:
    q = select(Project).order_by(Project.name)
    if p.role is not Role.ADMIN:
        q = q.where(Project.id == p.project_id)
    return list(s.scalars(q))


def model_of(s: Session, proj: Project, name: str) -> Model:
    m = s.scalar(select(Model).where(Model.project_id == proj.id, Model.name == name))
    if m is None:
        raise AuthError(404, f"no model {name[:100]!r} in project {proj.name!r}")
    return m


def card_of(s: Session, p: Principal, card_id: int) -> StoredScorecard:
    """A stored scorecard the principal may read (404 otherwise, whether or not it exists)."""
    c = s.get(StoredScorecard, card_id)
    if c is None or not p.can_read(c.project_id):
        raise AuthError(404, "no such evaluation (or this token cannot see it)")
    return c


def job_of(s: Session, p: Principal, job_id: str) -> Job:
    job = s.get(Job, job_id) if len(job_id) == 32 and job_id.isalnum() else None
    if job is None or not p.can_read(job.project_id):
        raise AuthError(404, "no such job (or this token cannot see it)")
    return job


@dataclass(frozen=True)
class Place:
    """Where a scorecard sits: project, model and version (``None`` for an unfiled pushed card)."""

    project: Project
    model: Model | None
    version: Version | None


def place_of(s: Session, project_id: int, version_id: int | None) -> Place:
    proj = s.get(Project, project_id)
    assert proj is not None
    ver = s.get(Version, version_id) if version_id else None
    model = s.get(Model, ver.model_id) if ver else None
    return Place(proj, model, ver)


def artifacts_of(s: Session, card: StoredScorecard) -> dict[str, Artifact]:
    """The evidence files of a scorecard by kind (the job's files, or a pushed card's own)."""
    q = select(Artifact).where(Artifact.job_id == card.job_id) if card.job_id else select(Artifact).where(Artifact.scorecard_id == card.id)
    out: dict[str, Artifact] = {}
    for a in s.scalars(q.order_by(Artifact.id)):
        if a.kind != "model":
            out[a.kind] = a
    return out


def read_raw(root: Path, card: StoredScorecard) -> dict[str, Any]:
    from ...jsonio import read_strict_json

    raw = read_strict_json(path_of(root, card.artifact_key))
    if not isinstance(raw, dict):
        raise AuthError(404, "the stored scorecard is not a JSON object")
    return raw


def load_card(root: Path, card: StoredScorecard) -> "Scorecard":
    from ...scorecard import Scorecard

    return Scorecard.from_dict(read_raw(root, card))


def detached_signature(s: Session, root: Path, card: StoredScorecard) -> dict[str, Any] | None:
    """A pushed card's detached signature (a service card's signature is embedded)."""
    from ...jsonio import read_strict_json

    if card.job_id:
        return None
    art = artifacts_of(s, card).get("signature")
    if art is None:
        return None
    sig = read_strict_json(path_of(root, art.key))
    return sig if isinstance(sig, dict) else None


def verify_now(s: Session, root: Path, card: StoredScorecard, raw: dict[str, Any] | None = None) -> "Verification":
    """The scorecard's signature verified against the trust store as it is now."""
    from ..trust import verify_card

    return verify_card(s, raw if raw is not None else read_raw(root, card), detached_signature(s, root, card))


def evaluations_of(s: Session, version: Version) -> list[tuple[StoredScorecard | None, Job | None]]:
    """A version's evaluations, newest first: each job (with its scorecard once finished) and each
    pushed scorecard."""
    rows: list[tuple[StoredScorecard | None, Job | None]] = []
    cards = {c.job_id: c for c in s.scalars(select(StoredScorecard).where(StoredScorecard.version_id == version.id))}
    for job in s.scalars(select(Job).where(Job.version_id == version.id).order_by(Job.created_at.desc())):
        rows.append((cards.pop(job.id, None), job))
    rows += [(c, None) for c in sorted(cards.values(), key=lambda c: -c.id)]
    return rows
