"""The admin pages of the UI (``/ui/admin``): projects, tokens (created and shown once, revoked),
the trust store (list, add a PEM public key, remove one; the service's own key stays), workers and
the queue (depth, jobs by state, running jobs with their worker and heartbeat).

Only a signed-in admin sees them: anyone else, signed in or not, gets exactly the answer of a page
that does not exist (nothing tells them the pages are there). Every form carries the session's
CSRF token; every change goes through the API's own function, so the API's checks apply; every
value is escaped by the templates' autoescaping.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from ...errors import RobustlabError
from ..auth import AuthError, Principal
from ..models import Job, JobState, Project, Role, Token, TrustedKey, utcnow
from .render import UIRoute, page

router = APIRouter(route_class=UIRoute, include_in_schema=False)
#: how far back the workers table looks (workers are known from the jobs they ran)
WORKERS_WINDOW = timedelta(hours=24)


def _state(request: Request) -> Any:
    from ..app import state_of

    return state_of(request)


def _admin(request: Request) -> Principal:
    from ..sessions import session_principal

    p = session_principal(request)
    if p is None or p.role is not Role.ADMIN:
        raise HTTPException(status_code=404)  # the framework's own answer for a missing page
    return p


def _age(t: Any) -> str:
    if t is None:
        return ""
    if t.tzinfo is None:
        from datetime import timezone

        t = t.replace(tzinfo=timezone.utc)
    s = max(0, int((utcnow() - t).total_seconds()))
    return f"{s} s ago" if s < 120 else (f"{s // 60} min ago" if s < 7200 else f"{s // 3600} h ago")


def overview(request: Request) -> dict[str, Any]:
    """What the admin page shows, read in one session."""
    from ..trust import service_public_key
    from ...signing import key_id

    st = _state(request)
    try:
        service_kid = key_id(service_public_key(st.settings))
    except (OSError, RobustlabError):
        service_kid = None
    with st.db.session() as s:
        projects = {p.id: p.name for p in s.scalars(select(Project).order_by(Project.name))}
        tokens = [{"id": t.id, "name": t.name, "role": t.role.value, "project": projects.get(t.project_id) if t.project_id else "",
                   "prefix": t.prefix, "created": _age(t.created_at), "revoked": t.revoked_at is not None}
                  for t in s.scalars(select(Token).order_by(Token.revoked_at.is_not(None), Token.id))]
        keys = [{"key_id": k.key_id, "name": k.name, "added": _age(k.created_at), "service": k.key_id == service_kid}
                for k in s.scalars(select(TrustedKey).order_by(TrustedKey.id))]
        counts = {st_.value: n for st_, n in s.execute(select(Job.state, func.count()).group_by(Job.state)).all()}
        running = [{"id": j.id, "project": projects.get(j.project_id, ""), "suite": j.suite, "worker": j.worker or "", "attempts": j.attempts,
                    "progress": round(100 * (j.progress or 0.0)), "message": j.message, "heartbeat": _age(j.heartbeat_at)}
                   for j in s.scalars(select(Job).where(Job.state == JobState.RUNNING).order_by(Job.started_at))]
        queued = [{"id": j.id, "project": projects.get(j.project_id, ""), "suite": j.suite, "attempts": j.attempts, "waiting": _age(j.created_at),
                   "message": j.message} for j in s.scalars(select(Job).where(Job.state == JobState.QUEUED).order_by(Job.created_at).limit(50))]
        since = utcnow() - WORKERS_WINDOW
        workers: dict[str, dict[str, Any]] = {}
        for j in s.scalars(select(Job).where(Job.worker.is_not(None), Job.started_at >= since).order_by(Job.started_at)):
            w = workers.setdefault(str(j.worker), {"name": str(j.worker), "running": "", "done": 0, "failed": 0, "last": None})
            if j.state is JobState.RUNNING:
                w["running"] = j.id
            elif j.state is JobState.SUCCEEDED:
                w["done"] += 1
            elif j.state is JobState.FAILED:
                w["failed"] += 1
            seen = j.heartbeat_at or j.started_at
            w["last"] = seen if w["last"] is None or (seen is not None and _naive(seen) > _naive(w["last"])) else w["last"]
    for w in workers.values():
        w["last"] = _age(w["last"])
    return {"projects": sorted(projects.values()), "tokens": tokens, "keys": keys, "counts": counts, "depth": counts.get(JobState.QUEUED.value, 0),
            "states": [x.value for x in JobState], "running": running, "queued": queued, "workers": sorted(workers.values(), key=lambda w: w["name"]),
            "heartbeat_timeout": st.settings.heartbeat_timeout_s, "roles": [r.value for r in Role]}


def _naive(t: Any) -> Any:
    return t.replace(tzinfo=None)


def _render(request: Request, p: Principal, *, message: str = "", created: dict[str, Any] | None = None, status: int = 200) -> Response:
    return page(request, "admin.html.j2", who=p, message=message, created=created, status=status, **overview(request))


@router.get("/ui/admin", response_class=HTMLResponse)
def admin_page(request: Request) -> Response:
    return _render(request, _admin(request))


async def _form(request: Request) -> tuple[Principal, dict[str, str]]:
    """The admin and the form's text fields, after the CSRF check."""
    from ..sessions import check_csrf

    p = _admin(request)
    form = await request.form(max_files=0, max_fields=10)
    values = {k: v for k, v in form.items() if isinstance(v, str)}
    check_csrf(request, values.get("csrf", ""))
    return p, values


def _apply(request: Request, p: Principal, action: Any) -> Any:
    with _state(request).db.session() as s:
        return action(s)


def _why(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors())[:300]
    return " ".join(str(getattr(exc, "message", exc)).split())[:300]


async def _change(request: Request, action: Any, *, created: bool = False) -> Response:
    p, values = await _form(request)
    try:
        out = await run_in_threadpool(_apply, request, p, lambda s: action(s, p, values))
    except (AuthError, RobustlabError, ValidationError, ValueError) as exc:
        status = exc.status if isinstance(exc, AuthError) else 422
        return await run_in_threadpool(lambda: _render(request, p, message=_why(exc), status=status))
    if created:
        return await run_in_threadpool(lambda: _render(request, p, created=out, status=201))
    return RedirectResponse("/ui/admin", status_code=303)


@router.post("/ui/admin/projects", response_class=HTMLResponse)
async def create_project(request: Request) -> Response:
    from ..api import ProjectIn
    from ..api import create_project as api_create

    return await _change(request, lambda s, p, v: api_create(ProjectIn(name=v.get("name", "").strip()), p, s))


@router.post("/ui/admin/tokens", response_class=HTMLResponse)
async def create_token(request: Request) -> Response:
    from ..api import TokenIn, new_token

    def act(s: Any, p: Principal, v: dict[str, str]) -> dict[str, Any]:
        body = TokenIn(name=v.get("name", "").strip(), role=v.get("role", ""), project=v.get("project") or None)  # type: ignore[arg-type]
        return new_token(body, p, s).model_dump(mode="json")

    return await _change(request, act, created=True)


@router.post("/ui/admin/tokens/{token_id}/revoke", response_class=HTMLResponse)
async def revoke_token(request: Request, token_id: int) -> Response:
    from ..api import delete_token

    return await _change(request, lambda s, p, v: delete_token(token_id, p, s))


@router.post("/ui/admin/keys", response_class=HTMLResponse)
async def add_key(request: Request) -> Response:
    from ..api import KeyIn
    from ..api import add_key as api_add

    return await _change(request, lambda s, p, v: api_add(KeyIn(name=v.get("name", "").strip(), public_key_pem=v.get("public_key_pem", "")), p, s, request))


@router.post("/ui/admin/keys/{kid}/remove", response_class=HTMLResponse)
async def remove_key(request: Request, kid: str) -> Response:
    from ..trust import remove_key as trust_remove

    return await _change(request, lambda s, p, v: trust_remove(s, _state(request).settings, kid))
