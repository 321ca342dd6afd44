"""First start: the first admin token (printed once by ``serve``; only its hash is kept)."""

from __future__ import annotations

from sqlalchemy import select

from .auth import create_token
from .db import Database
from .models import Role, Token
from .settings import Settings


def first_admin_token(settings: Settings, *, force: bool = False) -> str | None:
    """A new admin token when none is active (or ``force``); ``None`` otherwise."""
    with Database(settings.database_url).session() as s:
        exists = s.scalar(select(Token.id).where(Token.role == Role.ADMIN, Token.revoked_at.is_(None)).limit(1)) is not None
        if exists and not force:
            return None
        _row, value = create_token(s, name="admin" if not exists else "admin-extra", role=Role.ADMIN, project=None)
        return value
