"""Job API: submit an evaluation (model upload or ``zoo:`` name, suite, policy, baseline), follow
it, cancel it, download its files."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from .api import DB, Caller, project_by_name
from .artifacts import path_of, store_file
from .auth import AuthError, Principal
from .models import FINAL_STATES, Artifact, Job, JobState, Model, Project, Role, StoredScorecard, Version, utcnow
from .uploads import (DOCUMENT_LIMIT, MODEL_LIMIT, UploadError, check_arch, check_data, check_known, check_name, check_spec, receive,
                      sniff_model)

router = APIRouter()
log = logging.getLogger(__name__)
#: files of a job a client may download, by kind
DOWNLOADS = {"scorecard": "application/json", "signature": "application/json", "report": "text/html", "samples": "text/csv",
             "policy": "application/yaml", "junit": "application/xml", "gate": "text/markdown", "environment": "application/json"}
HEX32 = r"^[0-9a-f]{32}$"
#: stored files are shown with no script, no network and no framing, whatever they contain
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


def _state(request: Request) -> Any:
    from .app import state_of

    return state_of(request)


def job_view(s: Session, job: Job) -> dict[str, Any]:
    """The JSON view of a job, with its scorecard's signature status and gate decision."""
    ver = s.get(Version, job.version_id)
    model = s.get(Model, ver.model_id) if ver else None
    proj = s.get(Project, job.project_id)
    card = s.scalar(select(StoredScorecard).where(StoredScorecard.job_id == job.id))
    arts = sorted(a.kind for a in s.scalars(select(Artifact).where(Artifact.job_id == job.id)))
    return {
        "id": job.id, "project": proj.name if proj else None, "model": model.name if model else None, "version": ver.version if ver else None,
        "suite": job.suite, "state": job.state.value, "attempts": job.attempts, "progress": job.progress, "message": job.message,
        "exit_code": job.exit_code, "baseline": job.baseline, "options": job.options, "mlflow_run_id": job.mlflow_run_id,
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "started_at": job.started_at.isoformat() if job.started_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "scorecard": None if card is None else {"id": card.id, "signature_state": card.signature_state, "signature_key_id": card.signature_key_id,
                                                "signature_message": card.signature_message, "gate_outcome": card.gate_outcome,
                                                "gate_exit_code": card.gate_exit_code, "sha256": card.sha256, "headline": card.headline},
        "artifacts": [k for k in arts if k in DOWNLOADS],
    }


def model_version(s: Session, proj: Project, model_name: str, version: str, *, create: bool) -> tuple[Model, Version | None]:
    model = s.scalar(select(Model).where(Model.project_id == proj.id, Model.name == model_name))
    if model is None:
        if not create:
            raise AuthError(404, f"no model {model_name!r} in project {proj.name!r}")
        # created in its own transaction: concurrent first submissions of one model race on the
        # unique (project, name); the loser reads the winner's row instead of failing
        from sqlalchemy.exc import IntegrityError

        with Session(s.get_bind()) as s2:
            s2.add(Model(project_id=proj.id, name=model_name))
            try:
                s2.commit()
            except IntegrityError:
                s2.rollback()
        model = s.scalar(select(Model).where(Model.project_id == proj.id, Model.name == model_name))
        assert model is not None
    ver = s.scalar(select(Version).where(Version.model_id == model.id, Version.version == version))
    return model, ver


def resolve_baseline(s: Session, proj: Project, model: Model | None, baseline: str) -> str:
    """A baseline names a job id of this project, or a version of the same model (its latest
    finished service scorecard; ``model`` None: the model is new, so only a job id can name one).
    Returns the job id."""
    import re

    if re.match(HEX32, baseline):
        job = s.get(Job, baseline)
        if job is not None and job.project_id == proj.id and s.scalar(select(StoredScorecard.id).where(StoredScorecard.job_id == job.id)) is not None:
            return job.id
    ver = s.scalar(select(Version).where(Version.model_id == model.id, Version.version == baseline)) if model is not None else None
    if ver is not None:
        job_id = s.scalar(select(StoredScorecard.job_id).where(StoredScorecard.version_id == ver.id, StoredScorecard.job_id.is_not(None))
                          .order_by(StoredScorecard.id.desc()).limit(1))
        if job_id:
            return str(job_id)
    raise UploadError(400, f"baseline {baseline[:60]!r} is neither a finished job of project {proj.name!r} nor a version of model "
                           f"{model.name if model is not None else '(new)'!r} with a scorecard")


@router.post("/projects/{project}/jobs", status_code=201)
def submit(
    request: Request, project: str, p: Caller, s: DB,
    model_name: Annotated[str, Form(max_length=100)], version: Annotated[str, Form(max_length=100)],
    suite: Annotated[str, Form(max_length=100)] = "quick", spec: Annotated[str | None, Form(max_length=100)] = None,
    arch: Annotated[str | None, Form(max_length=100)] = None, baseline: Annotated[str | None, Form(max_length=100)] = None,
    limit: Annotated[int | None, Form(ge=1, le=1_000_000)] = None, seed: Annotated[int, Form(ge=0, le=2**31 - 1)] = 0,
    batch_size: Annotated[int, Form(ge=1, le=4096)] = 128, data: Annotated[str | None, Form(max_length=40)] = None,
    gpus: Annotated[int, Form(ge=0, le=16)] = 0,
    model: Annotated[UploadFile | None, File()] = None, policy: Annotated[UploadFile | None, File()] = None,
) -> dict[str, Any]:
    """Queue an evaluation of ``model_name``/``version`` (an uploaded weights file with a built-in
    ``arch``, or ``spec`` = ``zoo:NAME``) with a built-in ``suite`` and an optional gate ``policy``."""
    st = _state(request)
    proj = project_by_name(s, p, project)
    p.require(Role.SUBMITTER, proj.id)
    cleanup: list[Path] = []  # temporary uploads
    stored: list[str] = []  # artifact keys this request wrote
    got_model = got_policy = fmt = None
    made_model: int | None = None
    made_version: int | None = None
    adopted: tuple[Any, ...] | None = None
    try:
        check_name(model_name, "model name")
        check_name(version, "version")
        if suite not in st.settings.suites():
            raise UploadError(400, f"suite {suite[:60]!r} is not a suite of this service ({', '.join(st.settings.suites())})")
        if data is not None:
            check_data(data)
        if (model is None) == (spec is None):
            raise UploadError(400, "send either a model file (with arch) or spec=zoo:NAME")
        if spec is not None:
            check_spec(spec)
        if model is not None:
            if arch is None:
                raise UploadError(400, "an uploaded weights file needs arch (zoo-arch:NAME, torchvision:NAME or timm:NAME)")
            check_arch(arch)
        check_known(spec=spec, arch=arch, data=data)
        tmp_dir = st.settings.data_dir / "tmp"
        # everything the request sends is received and checked before anything is written
        if model is not None:
            got_model = receive(model.file, tmp_dir, limit=st.settings.max_upload_bytes, what="model file", governed_by=MODEL_LIMIT)
            cleanup.append(got_model.path)
            fmt = sniff_model(got_model.path)
        if policy is not None:
            got_policy = receive(policy.file, tmp_dir, limit=st.settings.max_document_bytes, what="policy", governed_by=DOCUMENT_LIMIT)
            cleanup.append(got_policy.path)
            _validate_policy(got_policy.path, st)
        mdl = s.scalar(select(Model).where(Model.project_id == proj.id, Model.name == model_name))
        ver = s.scalar(select(Version).where(Version.model_id == mdl.id, Version.version == version)) if mdl is not None else None
        base = resolve_baseline(s, proj, mdl, baseline) if baseline else None
        if ver is not None:
            adopted = _match_version(s, st, ver, model_name, version, sha=got_model.sha256 if got_model else None, arch=arch, spec=spec)
        if mdl is None:
            mdl, _ = model_version(s, proj, model_name, version, create=True)
            made_model = mdl.id
        if ver is None:
            ver = Version(model_id=mdl.id, version=version, file_format=fmt.value if fmt else None, arch=arch, sha256=got_model.sha256 if got_model else None, spec=spec)
            s.add(ver)
            s.flush()
            made_version = ver.id
        if got_model is not None and fmt is not None and ver.artifact_key is None:
            key = f"p{proj.id}/v{ver.id}/model{fmt.suffix}"
            store_file(s, st.settings.artifact_dir, got_model.path, key, kind="model", project_id=proj.id, move=True)
            ver.artifact_key, ver.arch, ver.file_format = key, arch, fmt.value
            stored.append(key)
        job_id = uuid.uuid4().hex
        job = Job(id=job_id, project_id=proj.id, version_id=ver.id, suite=suite, baseline=base, state=JobState.QUEUED, attempts=0, progress=0.0,
                  message="queued", options={"limit": limit, "seed": seed, "batch_size": batch_size, "data": data, "gpus": gpus},
                  submitted_by=p.token_id, created_at=utcnow())
        s.add(job)
        s.flush()
        if got_policy is not None:
            key = f"jobs/{job_id}/policy.yaml"
            store_file(s, st.settings.artifact_dir, got_policy.path, key, kind="policy", project_id=proj.id, job_id=job_id, move=True)
            job.policy_key = key
            stored.append(key)
    except Exception as exc:
        s.rollback()
        _undo(s, st, stored=stored, version_id=None, model_id=made_model)
        if isinstance(exc, UploadError):
            raise AuthError(exc.status, exc.message) from None
        raise
    finally:
        for path in cleanup:
            path.unlink(missing_ok=True)
    if st.settings.queue_url:
        from .queue import publish

        s.commit()  # the worker may take the message at once: the job must be visible first
        try:
            publish(st.settings.queue_url, job_id)
        except Exception:
            # refused as a whole: nothing half-submitted stays behind (the job, its policy, and the
            # model file, version and model this request created; an adopted version is restored)
            s.delete(job)
            s.flush()
            if adopted is not None and made_version is None:
                ver.artifact_key, ver.arch, ver.file_format, ver.spec = adopted
            _undo(s, st, stored=stored, version_id=made_version, model_id=made_model)
            raise
    return job_view(s, job)


def _validate_policy(path: Path, st: Any) -> None:
    from ..errors import RobustlabError
    from ..gates import load_policy
    from .uploads import public_message

    try:
        load_policy(path)
    except RobustlabError as exc:
        msg = public_message(exc, st.settings.data_dir, path, "the policy file").replace("policy file the policy file", "the policy file")
        raise UploadError(400, msg if msg.lower().startswith(("policy", "the policy file")) else f"policy: {msg}") from None


def _zoo_sha256(spec: str) -> str | None:
    """The sha256 of a ``zoo:NAME`` model's weights file (what its scorecards record), else None."""
    from ..errors import RobustlabError
    from ..models.zoo import ZOO
    from ..signing import sha256_file

    entry = ZOO.get(spec.split(":", 1)[1]) if spec.startswith("zoo:") else None
    try:
        return sha256_file(entry.locate()) if entry is not None else None
    except (RobustlabError, OSError):
        return None


def _match_version(s: Session, st: Any, ver: Version, model_name: str, version: str, *, sha: str | None, arch: str | None,
                   spec: str | None) -> tuple[Any, ...] | None:
    """Refuse (409) a submission to the existing version ``ver`` of another model; versions are
    immutable. A version created by pushing a scorecard records only its model's sha256: a
    submission of that very model (the weights file, or the ``zoo:`` model, with that sha256) gives
    it a way to run and is accepted. Returns the version's (artifact_key, arch, file_format, spec)
    before such an adoption, else None."""
    immutable = f"version {version!r} of {model_name!r} exists with another model; versions are immutable, name a new one"
    if ver.artifact_key is not None or ver.spec is not None:  # a runnable version: the same file and arch, or the same spec
        if ver.artifact_key is not None and (sha is None or ver.sha256 != sha or ver.arch != arch):
            raise UploadError(409, immutable.replace("another model", "another file or arch"))
        if ver.spec is not None and ver.spec != spec:
            raise UploadError(409, immutable)
        return None
    before = (ver.artifact_key, ver.arch, ver.file_format, ver.spec)
    theirs = sha if sha is not None else (_zoo_sha256(spec) if spec else None)
    if not ver.sha256 or theirs != ver.sha256:
        raise UploadError(409, f"version {version!r} of {model_name!r} was filed from a pushed scorecard of the model with sha256 "
                               f"{(ver.sha256 or 'unknown')[:12]}, and this submission's model has sha256 {(theirs or 'unknown')[:12]}; "
                               "submit that model's weights file (with arch) to evaluate it, or name a new version")
    if spec is not None:
        ver.spec = spec
    return before


def _undo(s: Session, st: Any, *, stored: list[str], version_id: int | None, model_id: int | None) -> None:
    """Remove what a refused submission wrote: the artifact files and rows of ``stored``, the
    version it created, and the model it created if no version is left under it (then commit)."""
    for key in stored:
        for art in s.scalars(select(Artifact).where(Artifact.key == key)):
            s.delete(art)
        try:
            path_of(st.settings.artifact_dir, key).unlink(missing_ok=True)
        except Exception:  # a key it wrote itself: only an I/O error is possible
            pass
    if version_id is not None and (v := s.get(Version, version_id)) is not None:
        s.delete(v)
    s.flush()
    if model_id is not None and (m := s.get(Model, model_id)) is not None and s.scalar(select(Version.id).where(Version.model_id == model_id).limit(1)) is None:
        s.delete(m)
    s.commit()


def _job(s: Session, p: Principal, job_id: str) -> Job:
    job = s.get(Job, job_id) if len(job_id) == 32 else None
    if job is None or not p.can_read(job.project_id):
        raise AuthError(404, "no such job (or this token cannot see it)")
    return job


@router.get("/jobs/{job_id}")
def get_job(job_id: str, p: Caller, s: DB) -> dict[str, Any]:
    return job_view(s, _job(s, p, job_id))


@router.get("/projects/{project}/jobs")
def list_jobs(project: str, p: Caller, s: DB, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
    proj = project_by_name(s, p, project)
    q = select(Job).where(Job.project_id == proj.id).order_by(Job.created_at.desc()).limit(max(1, min(limit, 500))).offset(max(0, offset))
    return [job_view(s, j) for j in s.scalars(q)]


@router.post("/jobs/{job_id}/cancel")
def cancel(job_id: str, p: Caller, s: DB) -> dict[str, Any]:
    job = _job(s, p, job_id)
    p.require(Role.SUBMITTER, job.project_id)
    if job.state not in FINAL_STATES:
        from sqlalchemy import update

        # conditional: a worker that stored the result meanwhile keeps it (the answer then shows the final state)
        done = s.execute(update(Job).where(Job.id == job.id, Job.state.not_in(list(FINAL_STATES)))
                         .values(state=JobState.CANCELLED, finished_at=utcnow(), message=f"cancelled by {p.name}")
                         .execution_options(synchronize_session=False))
        s.flush()
        s.refresh(job)
        if not getattr(done, "rowcount", 1):
            log.info("job %s finished before its cancel landed", job.id)
    return job_view(s, job)


@router.get("/jobs/{job_id}/files/{kind}")
def download(request: Request, job_id: str, kind: str, p: Caller, s: DB) -> Response:
    job = _job(s, p, job_id)
    if kind not in DOWNLOADS:
        raise AuthError(404, f"no file kind {kind[:40]!r}; one of {', '.join(DOWNLOADS)}")
    art = s.scalar(select(Artifact).where(Artifact.job_id == job.id, Artifact.kind == kind).order_by(Artifact.id.desc()).limit(1))
    if art is None:
        raise AuthError(404, f"job {job.id} has no {kind} file (yet)")
    path = path_of(_state(request).settings.artifact_dir, art.key)
    resp = FileResponse(path, media_type=DOWNLOADS[kind], filename=Path(art.key).name, content_disposition_type="inline" if kind == "report" else "attachment")
    resp.headers["Content-Security-Policy"] = REPORT_CSP
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp
