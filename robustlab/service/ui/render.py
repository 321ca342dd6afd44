"""Rendering plumbing of the UI: one Jinja environment with autoescaping (as the report's), strict
security headers on every page, and a route class that turns authorisation errors into HTML
(401 -> the sign-in page, 403/404 -> an error page with the same status)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute

from ..auth import AuthError, Principal

log = logging.getLogger(__name__)

#: UI pages: nothing runs, nothing loads from elsewhere; the report frame comes from this origin.
PAGE_CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; frame-src 'self'; "
            "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
#: the stored report: a sandboxed document (no scripts, no same-origin access), framed only by the UI.
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox; frame-ancestors 'self'; base-uri 'none'; form-action 'none'"


def security_headers(*, csp: str = PAGE_CSP, framable: bool = False) -> dict[str, str]:
    return {"Content-Security-Policy": csp, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "X-Frame-Options": "SAMEORIGIN" if framable else "DENY", "Cache-Control": "no-store"}


@lru_cache(maxsize=1)
def env() -> Any:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    e = Environment(loader=FileSystemLoader(str(Path(__file__).with_name("templates"))), autoescape=True,
                    undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    e.filters["fmt"] = fmt
    return e


@lru_cache(maxsize=1)
def plot_css() -> str:
    """The report's own rules for its SVG plots (read from the report's stylesheet, so the plots
    look the same here as in the report)."""
    from ... import report

    css = Path(report.__file__).with_name("templates") / "report.css"
    return "\n".join(ln for ln in css.read_text(encoding="utf-8").splitlines() if ln.startswith("svg.plot"))


def page(request: Request, template: str, *, who: Principal | None, status: int = 200, refresh: int | None = None, **ctx: Any) -> HTMLResponse:
    """Render ``template`` inside the layout (with the sign-out form's CSRF value)."""
    from ..sessions import csrf_token

    html = env().get_template(template).render(who=who, csrf=csrf_token(request) if who else "", refresh=refresh, plot_css=plot_css(), **ctx)
    return HTMLResponse(html, status_code=status, headers=security_headers())


def fmt(v: Any) -> str:
    """A value as the report shows it (the report's own formatting)."""
    from ...report.formatting import fmt_value

    return fmt_value(v)


def flatten(d: Any, prefix: str = "", *, max_list: int = 12) -> list[tuple[str, str]]:
    """``(dotted key, shown value)`` rows of a nested dict, as the report lists them."""
    from ...report.formatting import flatten_rows

    return flatten_rows(d, prefix, max_list=max_list)


class UIRoute(APIRoute):
    """Routes of the UI answer in HTML: a missing session redirects to ``/signin``, a refusal
    renders an error page with the refusal's status (404 keeps other projects invisible)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        inner = super().get_route_handler()

        async def handler(request: Request) -> Response:
            from ...errors import RobustlabError
            from ..artifacts import BadKey

            try:
                return await inner(request)
            except AuthError as exc:
                if exc.status == 401 and request.method == "GET":
                    return RedirectResponse("/signin", status_code=303)
                return error_page(request, exc.status, exc.message)
            except BadKey:
                return error_page(request, 404, "no such file")
            except FileNotFoundError:
                log.error("a stored file is missing under the artifact folder (%s)", request.url.path)
                return error_page(request, 500, "a stored file of this evaluation is missing from the service's artifact folder; tell an admin")
            except RobustlabError as exc:
                return error_page(request, 422, " ".join(str(exc).split())[:300])

        return handler


def error_page(request: Request, status: int, message: str) -> HTMLResponse:
    from ..sessions import session_principal

    return page(request, "error.html.j2", who=session_principal(request), status=status, status_code=status, message=message)
