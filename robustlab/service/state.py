"""What the app holds: settings, the database, the service key. One per :func:`create_app`."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

from .db import Database
from .settings import Settings


@dataclass
class ServiceState:
    settings: Settings
    db: Database
    session_secret: bytes


def session_secret(settings: Settings) -> bytes:
    """The UI's cookie/CSRF key: ``settings.session_secret``, else made once in the data folder (0600)."""
    if settings.session_secret:
        return settings.session_secret.encode()
    path = settings.data_dir / "keys" / "session.key"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        import os

        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return Path(path).read_text().strip().encode()


def ensure_service_key(settings: Settings) -> Path:
    """The service's signing key (made on first start); its public key is ``service.pub.pem``."""
    from ..signing import generate_key

    if not settings.key_path.is_file():
        generate_key(settings.key_path)
    return settings.key_path
