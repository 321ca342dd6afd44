"""The ASGI application: :func:`create_app` builds FastAPI with the JSON API under ``/api/v1``
(OpenAPI schema at ``/api/v1/openapi.json``), health/readiness/metrics, UI sign-in plumbing, and
the auditor UI when ``robustlab.service.ui`` provides one."""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from .. import __version__
from ..errors import RobustlabError
from .auth import AuthError
from .db import Database, DatabaseUnavailable, migrate
from .settings import Settings
from .state import ServiceState, ensure_service_key, session_secret

log = logging.getLogger(__name__)
API_PREFIX = "/api/v1"


def create_app(settings: Settings, *, migrate_db: bool = True) -> FastAPI:
    """The service app for ``settings`` (the database is migrated to the latest schema first)."""
    from sqlalchemy.exc import DataError, IntegrityError, InterfaceError, OperationalError

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.database_url)
    if migrate_db:
        migrate(db.engine)
    ensure_service_key(settings)
    state = ServiceState(settings=settings, db=db, session_secret=session_secret(settings))
    from .trust import ensure_service_key_trusted

    with db.session() as s:
        ensure_service_key_trusted(s, settings)
    app = FastAPI(title="robustlab service", version=__version__, openapi_url=f"{API_PREFIX}/openapi.json",
                  docs_url=None, redoc_url=None)  # the interactive docs load scripts from a CDN: pages stay self-contained
    app.state.service = state

    @app.exception_handler(AuthError)
    async def _auth(_req: Request, exc: AuthError) -> Response:
        return JSONResponse({"detail": exc.message}, status_code=exc.status, headers={"WWW-Authenticate": "Bearer"} if exc.status == 401 else None)

    @app.exception_handler(RobustlabError)
    async def _user_error(_req: Request, exc: RobustlabError) -> Response:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    from .queue import QueueUnavailable

    @app.exception_handler(QueueUnavailable)
    async def _queue_down(_req: Request, exc: QueueUnavailable) -> Response:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})

    @app.exception_handler(DatabaseUnavailable)
    async def _db_down(_req: Request, exc: DatabaseUnavailable) -> Response:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})

    from fastapi.exceptions import RequestValidationError

    @app.exception_handler(RequestValidationError)
    async def _invalid(_req: Request, exc: RequestValidationError) -> Response:
        # FastAPI's own answer echoes each refused input: megabytes of a huge field, and a 500 for
        # a value JSON cannot carry (1e999 reads as infinity); say where and what, never the input
        return JSONResponse({"detail": [{"type": str(e.get("type", "")), "loc": [x if isinstance(x, int) else str(x) for x in e.get("loc", ())],
                                         "msg": str(e.get("msg", ""))[:300]} for e in exc.errors()[:20]]}, status_code=422)

    @app.exception_handler(OverflowError)  # SQLite cannot bind the integer
    async def _out_of_range(_req: Request, exc: Exception) -> Response:
        return JSONResponse({"detail": "a number in the request is out of range: ids, offsets and limits are at most 9223372036854775807"}, status_code=422)

    @app.exception_handler(DataError)  # PostgreSQL: a numeric value out of range, a string too long for its column
    async def _bad_value(_req: Request, exc: Exception) -> Response:
        return JSONResponse({"detail": "a value in the request is out of range for the database (ids, offsets and limits are at most "
                                       "9223372036854775807); nothing was changed"}, status_code=422)

    @app.exception_handler(IntegrityError)
    async def _conflict(_req: Request, exc: Exception) -> Response:
        from .client import CONCURRENT

        return JSONResponse({"detail": f"{CONCURRENT}; nothing was changed, retry"}, status_code=409)

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def _db_error(_req: Request, exc: Exception) -> Response:
        log.warning("database error: %s", " ".join(str(exc).split())[:300])
        return JSONResponse({"detail": "the database is unavailable; nothing was changed, retry shortly"}, status_code=503, headers={"Retry-After": "5"})

    from .api import router as api_router
    from .jobs_api import router as jobs_router
    from .uploads import UploadError

    @app.exception_handler(UploadError)
    async def _upload(_req: Request, exc: UploadError) -> Response:
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    app.add_middleware(BodyLimit, limit=settings.max_upload_bytes + settings.max_document_bytes + (1 << 20))
    app.add_middleware(TokenBeforeBody, prefix=API_PREFIX)  # outermost: an unknown caller's body is never read
    app.include_router(jobs_router, prefix=API_PREFIX)
    from .scorecards_api import router as cards_router

    app.include_router(cards_router, prefix=API_PREFIX)
    from .ops import router as ops_router
    from .sessions import router as session_router

    app.include_router(api_router, prefix=API_PREFIX)
    app.include_router(ops_router)
    app.include_router(session_router)
    if importlib.util.find_spec("robustlab.service.ui") is not None:
        ui: Any = importlib.import_module("robustlab.service.ui")
        ui.install(app)
    else:
        from .ops import placeholder_index

        app.add_api_route("/", placeholder_index, include_in_schema=False)
    return app


class BodyLimit:
    """ASGI middleware: a request body over ``limit`` bytes gets 413 (checked on Content-Length and
    while the body streams in, so chunked uploads are cut off too)."""

    def __init__(self, app: Any, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for k, v in scope.get("headers") or []:
            if k == b"content-length" and v.isdigit() and int(v) > self.limit:
                await JSONResponse({"detail": f"request body over the limit of {self.limit} bytes"}, status_code=413)(scope, receive, send)
                return
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            msg = await receive()
            if msg.get("type") == "http.request":
                seen += len(msg.get("body") or b"")
                if seen > self.limit:
                    raise _TooLarge()
            return msg

        try:
            await self.app(scope, limited, send)
        except _TooLarge:
            await JSONResponse({"detail": f"request body over the limit of {self.limit} bytes"}, status_code=413)(scope, receive, send)


class TokenBeforeBody:
    """ASGI middleware: an API request that carries a body (POST, PUT, PATCH) is authenticated before
    any of its body is read, so a caller without a valid token cannot make the server read and parse
    hundreds of megabytes (the endpoint authenticates again, as it always does)."""

    def __init__(self, app: Any, *, prefix: str) -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("method") in ("POST", "PUT", "PATCH") and str(scope.get("path", "")).startswith(self.prefix + "/"):
            from starlette.concurrency import run_in_threadpool

            header = next((v.decode("latin-1") for k, v in scope.get("headers") or [] if k == b"authorization"), None)
            service = scope["app"].state.service

            def check() -> AuthError | None:
                from .auth import authenticate

                try:
                    with service.db.session() as s:
                        authenticate(s, header)
                except AuthError as exc:
                    return exc
                except Exception:  # noqa: BLE001 - e.g. the database is down: the endpoint answers that (503) as always
                    return None
                return None

            refused = await run_in_threadpool(check)
            if refused is not None:
                await JSONResponse({"detail": refused.message}, status_code=refused.status, headers={"WWW-Authenticate": "Bearer"})(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _TooLarge(Exception):
    pass


def state_of(request: Request) -> ServiceState:
    st: ServiceState = request.app.state.service
    return st


__all__ = ["API_PREFIX", "Database", "create_app", "state_of"]
