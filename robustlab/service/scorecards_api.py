"""Scorecards and the model tree: push a scorecard made elsewhere (verified against the trust
store; unsigned or untrusted ones are stored and shown as such), read one, list models and
versions with their latest evaluations."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from .api import DB, Caller, project_by_name
from .artifacts import path_of, store_file
from .auth import AuthError
from .jobs_api import model_version
from .models import Model, Role, ScorecardSource, StoredScorecard, Version
from .uploads import UploadError, check_name, receive

router = APIRouter()


def card_view(s: Session, c: StoredScorecard) -> dict[str, Any]:
    ver = s.get(Version, c.version_id) if c.version_id else None
    model = s.get(Model, ver.model_id) if ver else None
    return {"id": c.id, "job_id": c.job_id, "source": c.source.value, "model": model.name if model else None, "version": ver.version if ver else None,
            "signature_state": c.signature_state, "signature_key_id": c.signature_key_id, "signature_message": c.signature_message,
            "gate_outcome": c.gate_outcome, "gate_exit_code": c.gate_exit_code, "sha256": c.sha256, "headline": c.headline,
            "created_at": c.created_at.isoformat() if c.created_at else None}


@router.post("/projects/{project}/scorecards", status_code=201)
def push(request: Request, project: str, p: Caller, s: DB, scorecard: Annotated[UploadFile, File()],
         signature: Annotated[UploadFile | None, File()] = None, model_name: Annotated[str | None, Form(max_length=100)] = None,
         version: Annotated[str | None, Form(max_length=100)] = None) -> dict[str, Any]:
    """Store a scorecard made elsewhere; its signature (embedded, or a detached ``.sig``) is
    verified against the service's trust store and the state is recorded, whatever it is."""
    from ..errors import RobustlabError
    from ..jsonio import read_strict_json
    from ..scorecard import Scorecard
    from .app import state_of
    from .finalize import headline
    from .trust import verify_card

    st = state_of(request).settings
    proj = project_by_name(s, p, project)
    p.require(Role.SUBMITTER, proj.id)
    tmp = st.data_dir / "tmp"
    got = receive(scorecard.file, tmp, limit=st.max_document_bytes)
    sig_got = receive(signature.file, tmp, limit=64 * 1024) if signature is not None else None
    try:
        try:
            raw = read_strict_json(got.path)
            if not isinstance(raw, dict):
                raise RobustlabError("expected a JSON object")
            Scorecard.from_dict(raw).validate()
            sig = read_strict_json(sig_got.path) if sig_got is not None else None
        except (RobustlabError, TypeError, KeyError, ValueError, AttributeError) as exc:
            raise UploadError(400, f"not a valid robustlab scorecard ({' '.join(str(exc).split())[:200]})") from None
        if sig is not None and not isinstance(sig, dict):
            raise UploadError(400, "the detached signature is not a JSON object")
        v = verify_card(s, raw, sig)
        ver_id = None
        if model_name or version:
            if not (model_name and version):
                raise UploadError(400, "name both model_name and version, or neither")
            mdl, ver = model_version(s, proj, check_name(model_name, "model name"), check_name(version, "version"), create=True)
            if ver is None:
                ver = Version(model_id=mdl.id, version=version, sha256=str((raw.get("model") or {}).get("sha256") or "")[:64] or None)
                s.add(ver)
                s.flush()
            ver_id = ver.id
        row = StoredScorecard(project_id=proj.id, version_id=ver_id, source=ScorecardSource.PUSHED, artifact_key="", sha256=got.sha256,
                              signature_state=v.state.value, signature_key_id=v.key_id, signature_message="; ".join(v.messages)[:2000],
                              headline=headline(raw))
        s.add(row)
        s.flush()
        row.artifact_key = f"pushed/{row.id}/scorecard.json"
        store_file(s, st.artifact_dir, got.path, row.artifact_key, kind="scorecard", project_id=proj.id, scorecard_id=row.id)
        if sig_got is not None:
            store_file(s, st.artifact_dir, sig_got.path, f"pushed/{row.id}/scorecard.json.sig", kind="signature", project_id=proj.id, scorecard_id=row.id)
        return card_view(s, row)
    finally:
        got.path.unlink(missing_ok=True)
        if sig_got is not None:
            sig_got.path.unlink(missing_ok=True)


def _card(s: Session, p: Any, card_id: int) -> StoredScorecard:
    c = s.get(StoredScorecard, card_id)
    if c is None or not p.can_read(c.project_id):
        raise AuthError(404, "no such scorecard (or this token cannot see it)")
    return c


@router.get("/scorecards/{card_id}")
def get_card(card_id: int, p: Caller, s: DB) -> dict[str, Any]:
    return card_view(s, _card(s, p, card_id))


@router.get("/scorecards/{card_id}/file")
def get_card_file(request: Request, card_id: int, p: Caller, s: DB) -> Response:
    from .app import state_of

    c = _card(s, p, card_id)
    return FileResponse(path_of(state_of(request).settings.artifact_dir, c.artifact_key), media_type="application/json", filename="scorecard.json")


@router.get("/projects/{project}/models")
def list_models(project: str, p: Caller, s: DB) -> list[dict[str, Any]]:
    """Models of a project, each with its versions and their evaluations (newest first)."""
    proj = project_by_name(s, p, project)
    out = []
    for m in s.scalars(select(Model).where(Model.project_id == proj.id).order_by(Model.name)):
        versions = []
        for v in s.scalars(select(Version).where(Version.model_id == m.id).order_by(Version.id)):
            cards = s.scalars(select(StoredScorecard).where(StoredScorecard.version_id == v.id).order_by(StoredScorecard.id.desc()))
            versions.append({"id": v.id, "version": v.version, "spec": v.spec, "arch": v.arch, "sha256": v.sha256,
                             "scorecards": [card_view(s, c) for c in cards]})
        out.append({"id": m.id, "name": m.name, "versions": versions})
    return out


__all__ = ["router", "card_view"]
