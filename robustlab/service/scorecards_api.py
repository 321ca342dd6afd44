"""Scorecards and the model tree: push a scorecard made elsewhere (verified against the trust
store; unsigned or untrusted ones are stored and shown as such), read one, list models and
versions with their latest evaluations."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from .api import DB, Caller, project_by_name
from .artifacts import path_of, store_file
from .auth import AuthError
from .jobs_api import model_version
from .models import Model, Project, Role, ScorecardSource, StoredScorecard, Version
from .settings import Settings
from .uploads import DOCUMENT_LIMIT, UploadError, check_name, receive

log = logging.getLogger(__name__)
router = APIRouter()
#: largest detached signature accepted (a robustlab signature is well under 1 KiB)
MAX_SIGNATURE_BYTES = 64 * 1024
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


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
    verified against the service's trust store and the state is recorded, whatever it is.

    With ``model_name`` and ``version`` the scorecard is filed as an evaluation of that version,
    but only when its model (``model.sha256``, ``model.spec``, ``model.architecture``) is that
    version's model; otherwise nothing is stored and the answer is 409, one line saying what
    differs. A version's model is what the service recorded for it: the sha256 of its uploaded
    weights or of the first scorecard pushed to it, its ``zoo:`` spec, and the sha256 and
    architecture in the scorecards of its finished jobs; the sha256 decides when one is known,
    else the spec. A version that records none of these (and a scorecard with no model sha256
    that would create a version) cannot be matched, so filing is refused (409) rather than
    trusted: push without a name and version to store the scorecard unfiled, or name a new version.
    Error messages never show the server's files (the data folder reads ``DATA``)."""
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
    got = receive(scorecard.file, tmp, limit=st.max_document_bytes, what="scorecard", governed_by=DOCUMENT_LIMIT)
    try:
        sig_got = receive(signature.file, tmp, limit=MAX_SIGNATURE_BYTES, what="detached signature",
                          governed_by="the service (a robustlab signature is under 1 KiB)") if signature is not None else None
    except BaseException:
        got.path.unlink(missing_ok=True)
        raise
    try:
        try:
            raw = read_strict_json(got.path)
            if not isinstance(raw, dict):
                raise RobustlabError("expected a JSON object")
            card = Scorecard.from_dict(raw)
            card.validate()
            if not card.checks:
                raise ValueError("it holds no checks; push the scorecard.json that `robustlab evaluate` wrote")
        except (RobustlabError, TypeError, KeyError, ValueError, AttributeError) as exc:
            raise UploadError(400, f"not a valid robustlab scorecard ({_public(exc, st, got.path, 'the scorecard')})") from None
        try:
            sig = read_strict_json(sig_got.path, what="robustlab signature", fix="send the .sig file that `robustlab sign` wrote") if sig_got is not None else None
        except RobustlabError as exc:
            raise UploadError(400, f"not a valid detached signature ({_public(exc, st, sig_got.path if sig_got else None, 'the signature')})") from None
        if sig is not None and not isinstance(sig, dict):
            raise UploadError(400, "the detached signature is not a JSON object")
        v = verify_card(s, raw, sig)
        if v.state.value != "invalid":  # a card edited after signing is kept, labelled, as evidence; any other must hold together
            try:
                card.validate_numbers()
            except ValueError as exc:
                raise UploadError(400, f"not a valid robustlab scorecard ({' '.join(str(exc).split())[:300]}); push the scorecard.json that "
                                       "`robustlab evaluate` wrote, unedited") from None
        ver_id = None
        if model_name or version:
            if not (model_name and version):
                raise UploadError(400, "name both model_name and version, or neither")
            ver_id = _file_under(s, st, proj, check_name(model_name, "model name"), check_name(version, "version"), raw)
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


def _public(exc: BaseException, st: Settings, path: Path | None, name: str) -> str:
    from .uploads import public_message

    return public_message(exc, st.data_dir, path, name)


def _card_model(raw: dict[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(sha256, spec, architecture) of a scorecard's model; ``None`` for what it does not record
    (a sha256 that is not 64 hex digits counts as not recorded)."""
    m = raw.get("model")
    m = m if isinstance(m, dict) else {}
    sha = m.get("sha256")
    sha = sha.lower() if isinstance(sha, str) and SHA256_RE.match(sha.lower()) else None
    spec, arch = m.get("spec"), m.get("architecture")
    return sha, spec if isinstance(spec, str) else None, arch if isinstance(arch, str) else None


def _known_model(s: Session, st: Settings, ver: Version) -> tuple[set[str], set[str]]:
    """The sha256s and architectures the service knows for ``ver``'s model: its own record, and
    the models its finished jobs evaluated (read from their stored scorecards)."""
    from ..errors import RobustlabError
    from ..jsonio import read_strict_json
    from .artifacts import BadKey

    shas = {ver.sha256.lower()} if ver.sha256 else set()
    archs = {ver.arch} if ver.arch else set()
    for key in s.scalars(select(StoredScorecard.artifact_key).where(StoredScorecard.version_id == ver.id, StoredScorecard.job_id.is_not(None))):
        try:
            raw = read_strict_json(path_of(st.artifact_dir, key))
        except (RobustlabError, OSError, BadKey) as exc:
            log.warning("scorecard %s of version %s unreadable (%s); not used to identify its model", key, ver.id, _public(exc, st, None, ""))
            continue
        sha, _spec, arch = _card_model(raw if isinstance(raw, dict) else {})
        shas.update([sha] if sha else [])
        archs.update([arch] if arch else [])
    return shas, archs


def _mismatch(s: Session, st: Settings, ver: Version, raw: dict[str, Any]) -> str | None:
    """Why the scorecard ``raw`` is not an evaluation of ``ver``'s model (``None``: it is)."""
    sha, spec, arch = _card_model(raw)
    shas, archs = _known_model(s, st, ver)
    theirs = f"the scorecard's model is {' '.join(spec.split())[:100] if spec else 'unnamed'} (sha256 {sha[:12] if sha else 'not recorded'})"
    if shas:
        if sha not in shas:
            return f"{theirs}, but this version's model has sha256 {' or '.join(sorted(x[:12] for x in shas))}"
        if arch is not None and archs and arch not in archs:
            return f"the scorecard's model has this version's weights in architecture {' '.join(arch.split())[:100]}, but this version is {' or '.join(sorted(archs))}"
        return None
    if ver.spec:
        return None if spec == ver.spec else f"{theirs}, but this version is {ver.spec}"
    return "this version records no model identity (no sha256, spec or finished job), so no scorecard can be matched to it"


def _file_under(s: Session, st: Settings, proj: Project, model_name: str, version: str, raw: dict[str, Any]) -> int:
    """The id of version ``version`` of ``model_name`` to file the scorecard ``raw`` under: an
    existing version whose model it is, or a new one that takes its model's sha256 (409 otherwise)."""
    sha, _spec, _arch = _card_model(raw)
    mdl = s.scalar(select(Model).where(Model.project_id == proj.id, Model.name == model_name))
    ver = s.scalar(select(Version).where(Version.model_id == mdl.id, Version.version == version)) if mdl is not None else None
    if ver is None and sha is None:
        raise UploadError(409, f"not filed: the scorecard records no model sha256, so it cannot define version {version!r} of {model_name!r}; "
                               "push it without --name/--version to store it unfiled, or evaluate a weights file so its sha256 is recorded")
    if ver is None:
        created, ver = model_version(s, proj, model_name, version, create=True)
        if ver is None:  # still none (else a concurrent request made it: match against it below)
            ver = Version(model_id=created.id, version=version, sha256=sha)
            s.add(ver)
            s.flush()
            return ver.id
    why = _mismatch(s, st, ver, raw)
    if why is not None:
        raise UploadError(409, f"not filed under version {version!r} of {model_name!r}: {why}; push it under the version of that model, "
                               "or name a new version (versions are immutable)")
    return ver.id


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
