"""Service settings: one frozen dataclass, built from the ``serve`` options (or a test)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

#: default largest accepted model upload (bytes)
DEFAULT_MAX_UPLOAD = 512 * 1024 * 1024
#: default largest accepted scorecard or policy upload (bytes)
DEFAULT_MAX_DOCUMENT = 16 * 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Where the service keeps its state and how it behaves.

    Attributes:
        data_dir: the data folder: the SQLite database (by default), artifacts, the service's
            signing key, the MLflow tracking store and the job working folders live under it.
        database_url: SQLAlchemy URL (default ``sqlite:///DATA/robustlab.db``); PostgreSQL with
            ``postgresql+psycopg://...``.
        mlflow_uri: the tracking store every job is logged to (default ``sqlite:///DATA/mlflow.db``).
        max_upload_bytes: largest model upload accepted (413 above).
        max_document_bytes: largest scorecard/policy upload accepted (413 above).
        job_attempts: how many times a job is started before it is marked failed (a crashed
            worker's job is retried and resumes from its stored batch results).
        heartbeat_timeout_s: a running job whose worker has not reported for this long is requeued.
        queue_url: a Celery broker URL (``redis://host:6379/0``): jobs are published there for
            ``robustlab worker --queue URL`` on other machines; empty: workers poll the database.
        suite_dir: a folder of suite YAML files the operator adds to the built-in suites
            (requests name a suite; only these names and the built-in ones are accepted).
        session_secret: key of the UI session cookies and CSRF tokens (default: made once and kept
            in the data folder).
    """

    data_dir: Path
    database_url: str = ""
    mlflow_uri: str = ""
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD
    max_document_bytes: int = DEFAULT_MAX_DOCUMENT
    job_attempts: int = 3
    heartbeat_timeout_s: float = 30.0
    session_secret: str = field(default="", repr=False)
    suite_dir: Path | None = None
    queue_url: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir).resolve())
        if not self.database_url:
            object.__setattr__(self, "database_url", f"sqlite:///{self.data_dir / 'robustlab.db'}")
        if not self.mlflow_uri:
            object.__setattr__(self, "mlflow_uri", f"sqlite:///{self.data_dir / 'mlflow.db'}")

    @property
    def artifact_dir(self) -> Path:
        """Stored files, under names the service makes from ids (never from request text)."""
        return self.data_dir / "artifacts"

    @property
    def jobs_dir(self) -> Path:
        """One working folder per job (``jobs/<job id>``): the evaluate run's OUT, kept for resume."""
        return self.data_dir / "jobs"

    @property
    def key_path(self) -> Path:
        """The service's Ed25519 signing key; its public half is always in the trust store."""
        return self.data_dir / "keys" / "service.pem"

    def suites(self) -> dict[str, Path]:
        """Suite names a request may ask for: the built-in ones, then ``suite_dir``'s ``*.yaml``."""
        from ..suite import builtin_suites

        out = dict(builtin_suites())
        if self.suite_dir is not None and Path(self.suite_dir).is_dir():
            for f in sorted(Path(self.suite_dir).glob("*.yaml")):
                out.setdefault(f.stem, f)
        return out

    def suite_arg(self, name: str) -> str:
        """What ``evaluate --suite`` gets for ``name``: a built-in name as is, else the operator's file."""
        from ..suite import builtin_suites

        return name if name in builtin_suites() else str(self.suites()[name])
