"""The submit form (submitter and admin roles): the same submission the API takes, through the
API's own function (so every check on names, suites, specs, uploads and policies applies), behind
the session's CSRF token."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from ..api import project_by_name
from ..auth import AuthError, Principal
from ..models import Role
from .data import signed_in
from .render import UIRoute, page

router = APIRouter(route_class=UIRoute, include_in_schema=False)
TEXT_FIELDS = ("model_name", "version", "suite", "spec", "arch", "baseline", "limit", "data")


def _state(request: Request) -> Any:
    from ..app import state_of

    return state_of(request)


def _form_page(request: Request, p: Principal, project: str, *, message: str = "", values: dict[str, str] | None = None, status: int = 200) -> Response:
    suites = sorted(_state(request).settings.suites())
    return page(request, "submit.html.j2", who=p, project=project, suites=suites, message=message, values=values or {}, status=status)


def _allowed(request: Request, project: str) -> Principal:
    p = signed_in(request)
    with _state(request).db.session() as s:
        proj = project_by_name(s, p, project)
        p.require(Role.SUBMITTER, proj.id)
    return p


@router.get("/ui/projects/{project}/submit", response_class=HTMLResponse)
def submit_form(request: Request, project: str) -> Response:
    p = _allowed(request, project)
    return _form_page(request, p, project, values={"suite": "quick", "spec": "zoo:digits-cnn"})


def _upload(v: Any) -> UploadFile | None:
    """A file field, or ``None`` when the browser sent the empty file input."""
    if isinstance(v, UploadFile) and v.filename:
        return v
    return None


def _submit(request: Request, p: Principal, project: str, values: dict[str, str], model: UploadFile | None, policy: UploadFile | None) -> dict[str, Any]:
    from ..jobs_api import submit

    limit = values.get("limit") or None
    if limit is not None and (not limit.isdigit() or not 1 <= int(limit) <= 1_000_000):
        raise AuthError(400, "limit must be a whole number from 1 to 1000000 (or empty for every sample)")
    with _state(request).db.session() as s:
        out: dict[str, Any] = submit(
            request=request, project=project, p=p, s=s, model_name=values.get("model_name", ""), version=values.get("version", ""),
            suite=values.get("suite") or "quick", spec=None if model is not None else (values.get("spec") or None),
            arch=values.get("arch") or None, baseline=values.get("baseline") or None, limit=int(limit) if limit else None, seed=0,
            batch_size=128, data=values.get("data") or None, gpus=0, model=model, policy=policy)  # type: ignore[arg-type]
    return out


@router.post("/ui/projects/{project}/submit", response_class=HTMLResponse)
async def submit_post(request: Request, project: str) -> Response:
    from ..sessions import check_csrf

    form = await request.form(max_files=2, max_fields=20)
    csrf = form.get("csrf")
    check_csrf(request, csrf if isinstance(csrf, str) else "")
    p = await run_in_threadpool(_allowed, request, project)
    values = {k: v.strip()[:200] for k in TEXT_FIELDS if isinstance(v := form.get(k), str)}
    try:
        job = await run_in_threadpool(_submit, request, p, project, values, _upload(form.get("model")), _upload(form.get("policy")))
    except AuthError as exc:
        if exc.status in (401, 403, 404):
            raise
        return _form_page(request, p, project, message=exc.message, values=values, status=exc.status)
    return RedirectResponse(f"/ui/jobs/{job['id']}", status_code=303)
