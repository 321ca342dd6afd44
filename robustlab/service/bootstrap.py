"""First start: the first admin token (printed once by ``serve``; only its hash is kept)."""

from __future__ import annotations

from typing import Any

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


def ensure_mlflow_experiment(settings: Settings) -> None:
    """Create the service's MLflow experiment with its artifacts under ``DATA/mlartifacts``.

    A run logged to a database-backed store (``sqlite:``, ``postgresql:``) with no server behind it
    puts its artifacts where the experiment says, and an experiment created by a run defaults to
    ``./mlruns`` of whatever folder that process ran in. An HTTP tracking server keeps its own."""
    if settings.mlflow_uri.startswith(("http://", "https://", "databricks")):
        return
    import os

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from ..tracking.mlflow_log import DEFAULT_EXPERIMENT

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # one process at a time: MLflow creates (and migrates) a fresh SQLite store with Alembic, and two
    # workers doing it at once leave it half-migrated for good ("table _alembic_tmp_tags already exists")
    with open(settings.data_dir / "mlflow.lock", "a+b") as lock:
        _lock(lock)
        client = MlflowClient(tracking_uri=settings.mlflow_uri)
        if client.get_experiment_by_name(DEFAULT_EXPERIMENT) is not None:
            return
        location = settings.data_dir / "mlartifacts"
        location.mkdir(parents=True, exist_ok=True)
        try:
            client.create_experiment(DEFAULT_EXPERIMENT, artifact_location=location.as_uri())
        except MlflowException:  # a worker on another machine created it first
            if client.get_experiment_by_name(DEFAULT_EXPERIMENT) is None:
                raise


def _lock(f: Any) -> None:
    """An exclusive lock on ``f``, released when it is closed (POSIX; elsewhere, none)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        return
    fcntl.flock(f.fileno(), fcntl.LOCK_EX)
