"""UI sign-in and CSRF plumbing (the auditor UI in ``robustlab.service.ui`` builds on these).

Sign-in exchanges an API token for a session cookie ``rl_session`` = ``<token id>.<issued>.<mac>``
(HMAC-SHA256 with the service's session secret over the id, the issue time and the token's stored
hash, so revoking the token ends the session). Cookies are HttpOnly and SameSite=Strict.

CSRF: every state-changing form carries a hidden ``csrf`` field equal to :func:`csrf_token` of the
session (an HMAC of the session cookie); :func:`check_csrf` refuses a mismatch with 403. The
sign-in form itself uses a double-submit cookie ``rl_csrf``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from .auth import AuthError, Principal, principal_for
from .models import Token

SESSION_COOKIE = "rl_session"
PRE_CSRF_COOKIE = "rl_csrf"
SESSION_SECONDS = 12 * 3600

router = APIRouter(include_in_schema=False)


def _secret(request: Request) -> bytes:
    from .app import state_of

    return state_of(request).session_secret


def _mac(secret: bytes, *parts: str) -> str:
    return hmac.new(secret, "|".join(parts).encode(), hashlib.sha256).hexdigest()


def make_session(secret: bytes, token: Token, now: float | None = None) -> str:
    issued = str(int(now if now is not None else time.time()))
    return f"{token.id}.{issued}.{_mac(secret, 'session', str(token.id), issued, token.token_hash)}"


def session_principal(request: Request) -> Principal | None:
    """The signed-in principal of the request's session cookie, or ``None``."""
    from sqlalchemy import select

    from .app import state_of

    raw = request.cookies.get(SESSION_COOKIE, "")
    parts = raw.split(".")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    if time.time() - int(parts[1]) > SESSION_SECONDS:
        return None
    with state_of(request).db.session() as s:
        row = s.scalar(select(Token).where(Token.id == int(parts[0])))
        if row is None or row.revoked_at is not None:
            return None
        if not hmac.compare_digest(parts[2], _mac(_secret(request), "session", parts[0], parts[1], row.token_hash)):
            return None
        return Principal(row.id, row.name, row.role, row.project_id)


def csrf_token(request: Request) -> str:
    """The CSRF value forms of this session must carry (empty without a session)."""
    raw = request.cookies.get(SESSION_COOKIE, "")
    return _mac(_secret(request), "csrf", raw) if raw else ""


def check_csrf(request: Request, submitted: str) -> None:
    """Raise 403 unless ``submitted`` is this session's CSRF value."""
    expected = csrf_token(request)
    if not expected or not hmac.compare_digest(expected, submitted or ""):
        raise AuthError(403, "the form's CSRF token is missing or stale; reload the page and submit again")


def require_session(request: Request) -> Principal:
    p = session_principal(request)
    if p is None:
        raise AuthError(401, "sign in first (/signin)")
    return p


_SIGNIN = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sign in - robustlab</title></head>
<body><h1>robustlab: sign in</h1><p>{message}</p>
<form method="post" action="/signin"><input type="hidden" name="csrf" value="{csrf}">
<label>API token <input type="password" name="token" autocomplete="off" required></label>
<button type="submit">Sign in</button></form></body></html>"""


def _over_https(request: Request) -> bool:
    """The browser reached the service over HTTPS: directly, or through a TLS-terminating proxy on a
    trusted address (uvicorn applies ``X-Forwarded-Proto`` from ``--forwarded-allow-ips``, loopback by
    default). Then the cookies are ``Secure``, so a browser never sends them over plain HTTP."""
    return request.url.scheme == "https"


@router.get("/signin", response_class=HTMLResponse)
def signin_form(request: Request) -> Response:
    pre = secrets.token_hex(16)
    resp = HTMLResponse(_SIGNIN.format(message="Paste an API token (auditor, submitter or admin).", csrf=pre))
    resp.set_cookie(PRE_CSRF_COOKIE, pre, httponly=True, samesite="strict", max_age=3600, secure=_over_https(request))
    return resp


@router.post("/signin")
def signin(request: Request, token: str = Form(..., max_length=200), csrf: str = Form("", max_length=100)) -> Response:
    from .app import state_of

    pre = request.cookies.get(PRE_CSRF_COOKIE, "")
    if not pre or not hmac.compare_digest(pre, csrf):
        raise AuthError(403, "the sign-in form's CSRF token is missing or stale; reload /signin")
    with state_of(request).db.session() as s:
        try:
            p = principal_for(s, token.strip())
        except AuthError:
            return HTMLResponse(_SIGNIN.format(message="Unknown or revoked token.", csrf=pre), status_code=401)
        row = s.get(Token, p.token_id)
        assert row is not None
        value = make_session(_secret(request), row)
    resp = RedirectResponse("/", status_code=303)
    resp.set_cookie(SESSION_COOKIE, value, httponly=True, samesite="strict", max_age=SESSION_SECONDS, secure=_over_https(request))
    resp.delete_cookie(PRE_CSRF_COOKIE)
    return resp


@router.post("/signout")
def signout(request: Request, csrf: str = Form("", max_length=100)) -> Response:
    check_csrf(request, csrf)
    resp = RedirectResponse("/signin", status_code=303)
    resp.delete_cookie(SESSION_COOKIE)
    return resp
