"""API tokens, roles and authorisation.

A token is ``rl_`` + 43 url-safe characters (256 random bits); the database stores only its
sha256 (fast hashing is enough for a secret of that entropy; nothing guessable is stored). Each
token has one role and, except admin tokens, one project:

=========  =====================================================================
admin      everything, in every project (projects, tokens, trust store, queue)
submitter  read its project, submit evaluations, push scorecards
auditor    read its project (never submit, push, cancel or delete)
=========  =====================================================================

Every API call names what it needs with :func:`require`; a token of project A asking for
project B gets 404 (the project's existence is not revealed), a role below the need gets 403.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import select
from sqlalchemy.orm import Session

from .models import Project, Role, Token

TOKEN_PREFIX = "rl_"
#: which roles satisfy a need
_RANK = {Role.AUDITOR: 0, Role.SUBMITTER: 1, Role.ADMIN: 2}


class AuthError(Exception):
    """Refused: ``status`` is 401 (no or bad token), 403 (role too low) or 404 (other project)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def new_token_value() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's id, role and project (``None``: an admin of every project)."""

    token_id: int
    name: str
    role: Role
    project_id: int | None

    def can_read(self, project_id: int) -> bool:
        return self.role is Role.ADMIN or self.project_id == project_id

    def require(self, need: Role, project_id: int | None = None) -> None:
        """Raise :class:`AuthError` unless this principal has role ``need`` in ``project_id``
        (``None``: a service-wide action, admin only unless ``need`` is lower and unscoped)."""
        if project_id is not None and not self.can_read(project_id):
            raise AuthError(404, "no such project (or this token cannot see it)")
        if project_id is None and need is Role.ADMIN and self.role is not Role.ADMIN:
            raise AuthError(403, "this action needs an admin token")
        if _RANK[self.role] < _RANK[need]:
            raise AuthError(403, f"this action needs the {need.value} role; this token is {self.role.value}")


def create_token(s: Session, *, name: str, role: Role, project: Project | None) -> tuple[Token, str]:
    """Store a new token (hashed); return the row and the token value (shown once)."""
    if role is not Role.ADMIN and project is None:
        raise ValueError("submitter and auditor tokens belong to a project")
    value = new_token_value()
    row = Token(name=name, token_hash=hash_token(value), prefix=value[:10], role=role, project_id=project.id if project else None)
    s.add(row)
    s.flush()
    return row, value


def authenticate(s: Session, header: str | None) -> Principal:
    """The principal of an ``Authorization: Bearer <token>`` header (401 otherwise)."""
    if not header:
        raise AuthError(401, "missing token: send 'Authorization: Bearer <token>' (robustlab submit --token T)")
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value.startswith(TOKEN_PREFIX) or len(value) > 100:
        raise AuthError(401, "malformed token: send 'Authorization: Bearer rl_...'")
    return principal_for(s, value)


def principal_for(s: Session, value: str) -> Principal:
    h = hash_token(value)
    row = s.scalar(select(Token).where(Token.token_hash == h))
    if row is None or not hmac.compare_digest(row.token_hash, h) or row.revoked_at is not None:
        raise AuthError(401, "unknown or revoked token; ask an admin for a new one")
    return Principal(row.id, row.name, row.role, row.project_id)


def revoke(s: Session, token_id: int) -> bool:
    row = s.get(Token, token_id)
    if row is None or row.revoked_at is not None:
        return False
    row.revoked_at = datetime.now(timezone.utc)
    return True
