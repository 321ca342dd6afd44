"""Read-only pages: projects -> models -> versions -> evaluations, the evaluation page with its
report and evidence bundle, the model page with headline metrics across versions, compare."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from ...parsing import redact_credentials
from ..api import project_by_name
from ..artifacts import path_of
from ..auth import AuthError
from ..models import FINAL_STATES, Job, Model, Role, StoredScorecard, Version
from .data import (artifact_root, artifacts_of, card_of, evaluations_of, job_of, load_card, model_of, place_of, read_raw, signed_in,
                   verify_now, visible_projects)
from .render import REPORT_CSP, UIRoute, flatten, page, security_headers

router = APIRouter(route_class=UIRoute, include_in_schema=False)
#: versions plotted on a model page (the newest)
MAX_PLOTTED = 30


def _db(request: Request) -> Any:
    from ..app import state_of

    return state_of(request).db


@router.get("/", response_class=HTMLResponse)
def index(request: Request) -> Response:
    p = signed_in(request)
    with _db(request).session() as s:
        projects = visible_projects(s, p)
        return page(request, "index.html.j2", who=p, projects=[(x.name, len(list(s.scalars(select(Model.id).where(Model.project_id == x.id)))))
                                                                for x in projects])


@router.get("/favicon.ico")
def favicon() -> Response:
    """No icon (browsers ask for one on every document, the stored reports included)."""
    return Response(status_code=204, headers={"Cache-Control": "max-age=86400"})


@router.get("/ui/projects/{project}", response_class=HTMLResponse)
def project_page(request: Request, project: str) -> Response:
    p = signed_in(request)
    with _db(request).session() as s:
        proj = project_by_name(s, p, project)
        models = []
        for m in s.scalars(select(Model).where(Model.project_id == proj.id).order_by(Model.name)):
            n = len(list(s.scalars(select(Version.id).where(Version.model_id == m.id))))
            models.append((m.name, n))
        jobs = []
        for j in s.scalars(select(Job).where(Job.project_id == proj.id).order_by(Job.created_at.desc()).limit(50)):
            pl = place_of(s, j.project_id, j.version_id)
            jobs.append((j, pl.model.name if pl.model else "", pl.version.version if pl.version else ""))
        pushed = list(s.scalars(select(StoredScorecard).where(StoredScorecard.project_id == proj.id, StoredScorecard.version_id.is_(None))
                                .order_by(StoredScorecard.id.desc()).limit(50)))
        can_submit = p.role in (Role.SUBMITTER, Role.ADMIN)
        return page(request, "project.html.j2", who=p, project=proj.name, models=models, jobs=jobs, pushed=pushed, can_submit=can_submit)


@router.get("/ui/projects/{project}/models/{model}", response_class=HTMLResponse)
def model_page(request: Request, project: str, model: str) -> Response:
    from .charts import families

    p = signed_in(request)
    root = artifact_root(request)
    with _db(request).session() as s:
        proj = project_by_name(s, p, project)
        m = model_of(s, proj, model)
        versions = list(s.scalars(select(Version).where(Version.model_id == m.id).order_by(Version.id)))
        rows = [(v, evaluations_of(s, v)) for v in versions]
        labels, cards = [], []
        for v, evals in rows[-MAX_PLOTTED:]:
            latest = next((c for c, _j in evals if c is not None), None)
            labels.append(v.version)
            cards.append(load_card(root, latest) if latest is not None else None)
        fams = families(labels, cards)
        choices = [(c.id, f"{v.version} · evaluation {c.id}" + (f" ({j.suite})" if j else " (pushed)")) for v, evals in rows for c, j in evals if c is not None]
        return page(request, "model.html.j2", who=p, project=proj.name, model=m.name, rows=rows, families=fams, labels=labels, choices=choices)


def _provenance(raw: dict[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for section in ("model", "data", "suite", "run", "tool", "environment"):
        val = raw.get(section)
        if isinstance(val, dict):
            small = {k: v for k, v in val.items() if k not in ("ids", "labels", "class_names", "sample_ids")}
            out += [(f"{section}.{k}", v) for k, v in flatten(small)]
    return out


@router.get("/ui/evaluations/{card_id}", response_class=HTMLResponse)
def evaluation_page(request: Request, card_id: int) -> Response:
    p = signed_in(request)
    root = artifact_root(request)
    with _db(request).session() as s:
        c = card_of(s, p, card_id)
        raw = read_raw(root, c)
        v = verify_now(s, root, c, raw)
        place = place_of(s, c.project_id, c.version_id)
        job = s.get(Job, c.job_id) if c.job_id else None
        arts = artifacts_of(s, c)
        policy = path_of(root, arts["policy"].key).read_text(encoding="utf-8", errors="replace")[:20000] if "policy" in arts else None
        gate_md = path_of(root, arts["gate"].key).read_text(encoding="utf-8", errors="replace")[:20000] if "gate" in arts else None
        card = load_card(root, c).in_key_schema()
        iv = card.intervals()
        headline = [(k, val, iv.get(k)) for k, val in sorted(c.headline.items())]
        from ..settings import Settings

        settings: Settings = _settings(request)
        return page(request, "evaluation.html.j2", who=p, c=c, place=place, job=job, v=v, policy=policy, gate_md=gate_md, headline=headline,
                    provenance=_provenance(raw), files=sorted(k for k in arts if k != "model"), mlflow_uri=redact_credentials(settings.mlflow_uri) if job else None)


def _settings(request: Request) -> Any:
    from ..app import state_of

    return state_of(request).settings


@router.get("/ui/evaluations/{card_id}/report", response_class=HTMLResponse)
def evaluation_report(request: Request, card_id: int) -> Response:
    """The report as its own sandboxed document (no scripts, nothing loaded, framed only here)."""
    p = signed_in(request)
    root = artifact_root(request)
    with _db(request).session() as s:
        c = card_of(s, p, card_id)
        art = artifacts_of(s, c).get("report")
        if art is not None:
            html = path_of(root, art.key).read_text(encoding="utf-8", errors="replace")
        else:  # a pushed scorecard: rendered from it by the report module, with the status verified now
            from ...report import render_report

            html = render_report(load_card(root, c), verification=verify_now(s, root, c))
    return HTMLResponse(html, headers=security_headers(csp=REPORT_CSP, framable=True))


@router.get("/ui/evaluations/{card_id}/bundle.zip")
def evaluation_bundle(request: Request, card_id: int) -> Response:
    from .bundle import build_bundle

    p = signed_in(request)
    with _db(request).session() as s:
        c = card_of(s, p, card_id)
        blob = build_bundle(s, artifact_root(request), c)
    headers = security_headers()
    headers["Content-Disposition"] = f'attachment; filename="evaluation-{c.id}-evidence.zip"'
    return Response(blob, media_type="application/zip", headers=headers)


@router.get("/ui/evaluations/{card_id}/files/{kind}")
def evaluation_file(request: Request, card_id: int, kind: str) -> Response:
    from .bundle import NAMES

    p = signed_in(request)
    with _db(request).session() as s:
        c = card_of(s, p, card_id)
        art = artifacts_of(s, c).get(kind) if kind in NAMES or kind == "signature" else None
        if art is None:
            raise AuthError(404, f"this evaluation has no {kind[:40]!r} file")
        blob = path_of(artifact_root(request), art.key).read_bytes()
    headers = security_headers(csp=REPORT_CSP)
    headers["Content-Disposition"] = f'attachment; filename="{NAMES.get(kind, "signature.json")}"'
    return Response(blob, media_type="application/octet-stream", headers=headers)


@router.get("/ui/compare", response_class=HTMLResponse)
def compare_page(request: Request, a: int, b: int) -> Response:
    """``robustlab compare A B`` of two evaluations the principal may read (B relative to A)."""
    from ...gates.compare import compare_scorecards, format_comparison, mismatch_warning

    p = signed_in(request)
    root = artifact_root(request)
    with _db(request).session() as s:
        ca, cb = card_of(s, p, a), card_of(s, p, b)
        pa, pb = place_of(s, ca.project_id, ca.version_id), place_of(s, cb.project_id, cb.version_id)
        cmp = compare_scorecards(load_card(root, ca), load_card(root, cb))
        return page(request, "compare.html.j2", who=p, a=ca, b=cb, pa=pa, pb=pb, cmp=cmp, moved=cmp.moved(), warning=mismatch_warning(cmp.settings),
                    text=format_comparison(cmp))


@router.get("/ui/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: str) -> Response:
    """A job's progress (the page refreshes itself every few seconds until the job ends)."""
    p = signed_in(request)
    with _db(request).session() as s:
        job = job_of(s, p, job_id)
        place = place_of(s, job.project_id, job.version_id)
        card = s.scalar(select(StoredScorecard).where(StoredScorecard.job_id == job.id))
        final = job.state in FINAL_STATES
        return page(request, "job.html.j2", who=p, job=job, place=place, card=card, final=final, refresh=None if final else 3)
