"""Operations endpoints: ``/healthz`` (the process answers), ``/readyz`` (the database answers and
is migrated), ``/metrics`` (Prometheus text: queue depth, jobs by state, job durations), and the
placeholder index page used until the UI package is installed."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response

router = APIRouter(include_in_schema=False)


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request) -> Response:
    from .app import state_of
    from .db import HEAD, DatabaseUnavailable, current_revision

    st = state_of(request)
    try:
        st.db.ping()
        rev = current_revision(st.db.engine)
    except DatabaseUnavailable as exc:
        return JSONResponse({"status": "unavailable", "detail": str(exc)}, status_code=503)
    if rev != HEAD:
        return JSONResponse({"status": "unavailable", "detail": f"database schema is {rev}, not {HEAD}; restart `robustlab serve` to migrate"}, status_code=503)
    return JSONResponse({"status": "ready", "schema": rev})


@router.get("/metrics")
def metrics(request: Request) -> Response:
    from .app import state_of
    from .metrics import prometheus_text

    with state_of(request).db.session() as s:
        return PlainTextResponse(prometheus_text(s), media_type="text/plain; version=0.0.4")


def placeholder_index() -> Response:
    return HTMLResponse("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>robustlab service</title></head>"
                        "<body><h1>robustlab service</h1><p><a href=\"/signin\">Sign in</a> &middot; "
                        "<a href=\"/api/v1/openapi.json\">API schema</a></p></body></html>")
