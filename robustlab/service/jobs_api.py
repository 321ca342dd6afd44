"""Job API: submit an evaluation (model upload or ``zoo:`` name, suite, policy, baseline), follow
it, cancel it, download its files."""

from __future__ import annotations

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
from .uploads import DOCUMENT_LIMIT, MODEL_LIMIT, UploadError, check_arch, check_data, check_name, check_spec, receive, sniff_model

router = APIRouter()
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


def resolve_baseline(s: Session, proj: Project, model: Model, baseline: str) -> str:
    """A baseline names a job id of this project, or a version of the same model (its latest
    finished service scorecard). Returns the job id."""
    import re

    if re.match(HEX32, baseline):
        job = s.get(Job, baseline)
        if job is not None and job.project_id == proj.id and s.scalar(select(StoredScorecard.id).where(StoredScorecard.job_id == job.id)) is not None:
            return job.id
    ver = s.scalar(select(Version).where(Version.model_id == model.id, Version.version == baseline))
    if ver is not None:
        job_id = s.scalar(select(StoredScorecard.job_id).where(StoredScorecard.version_id == ver.id, StoredScorecard.job_id.is_not(None))
                          .order_by(StoredScorecard.id.desc()).limit(1))
        if job_id:
            return str(job_id)
    raise UploadError(400, f"baseline {baseline[:60]!r} is neither a finished job of project {proj.name!r} nor a version of model {model.name!r} with a scorecard")


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
        mdl, ver = model_version(s, proj, model_name, version, create=True)
        job_id = uuid.uuid4().hex
        tmp_dir = st.settings.data_dir / "tmp"
        if model is not None:
            got = receive(model.file, tmp_dir, limit=st.settings.max_upload_bytes, what="model file", governed_by=MODEL_LIMIT)
            try:
                fmt = sniff_model(got.path)
                if ver is not None and (ver.sha256 != got.sha256 or ver.arch != arch):
                    raise UploadError(409, f"version {version!r} of {model_name!r} exists with another file or arch; versions are immutable, name a new one")
                if ver is None:
                    ver = Version(model_id=mdl.id, version=version, file_format=fmt.value, arch=arch, sha256=got.sha256)
                    s.add(ver)
                    s.flush()
                    key = f"p{proj.id}/v{ver.id}/model{fmt.suffix}"
                    store_file(s, st.settings.artifact_dir, got.path, key, kind="model", project_id=proj.id, move=True)
                    ver.artifact_key = key
            finally:
                got.path.unlink(missing_ok=True)
        else:
            assert spec is not None
            if ver is not None and ver.spec != spec:
                raise UploadError(409, f"version {version!r} of {model_name!r} exists with another model; versions are immutable, name a new one")
            if ver is None:
                ver = Version(model_id=mdl.id, version=version, spec=spec)
                s.add(ver)
                s.flush()
        base = resolve_baseline(s, proj, mdl, baseline) if baseline else None
        job = Job(id=job_id, project_id=proj.id, version_id=ver.id, suite=suite, baseline=base, state=JobState.QUEUED, attempts=0, progress=0.0,
                  message="queued", options={"limit": limit, "seed": seed, "batch_size": batch_size, "data": data, "gpus": gpus},
                  submitted_by=p.token_id, created_at=utcnow())
        s.add(job)
        s.flush()
        if policy is not None:
            got = receive(policy.file, tmp_dir, limit=st.settings.max_document_bytes, what="policy", governed_by=DOCUMENT_LIMIT)
            try:
                _validate_policy(got.path)
                key = f"jobs/{job_id}/policy.yaml"
                store_file(s, st.settings.artifact_dir, got.path, key, kind="policy", project_id=proj.id, job_id=job_id, move=True)
                job.policy_key = key
            finally:
                got.path.unlink(missing_ok=True)
    except UploadError as exc:
        s.rollback()
        raise AuthError(exc.status, exc.message) from None
    if st.settings.queue_url:
        from .queue import publish

        s.commit()  # the worker may take the message at once: the job must be visible first
        try:
            publish(st.settings.queue_url, job_id)
        except Exception:
            s.delete(job)  # refused as a whole: nothing half-submitted stays behind
            s.commit()
            raise
    return job_view(s, job)


def _validate_policy(path: Path) -> None:
    from ..errors import RobustlabError
    from ..gates import load_policy

    try:
        load_policy(path)
    except RobustlabError as exc:
        raise UploadError(400, f"policy: {exc}") from None


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
        job.state = JobState.CANCELLED  # a worker running it sees this at its next heartbeat and stops the run
        job.finished_at = utcnow()
        job.message = f"cancelled by {p.name}"
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
