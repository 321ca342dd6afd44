"""The service's tables (SQLAlchemy 2 ORM). The schema is created and upgraded only by the Alembic
migrations in ``robustlab/service/migrations`` (a test checks that they match these classes).

Projects -> models -> versions -> jobs (evaluations) -> one scorecard each; pushed scorecards have
no job. Tokens carry a role and a project (``None`` only for admin tokens, which reach every
project). Artifacts are files under the artifact folder named by a key the service builds from ids.
"""

from __future__ import annotations

from datetime import datetime, timezone
from enum import Enum

from sqlalchemy import JSON, DateTime, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy import Enum as SAEnum
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Role(str, Enum):
    """What a token may do: admin (everything), submitter (submit/push/read in its project),
    auditor (read its project)."""

    ADMIN = "admin"
    SUBMITTER = "submitter"
    AUDITOR = "auditor"


class JobState(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"  # the evaluation finished (the gate may still have failed: see exit_code)
    FAILED = "failed"  # the evaluation could not run (input error, or retries used up)
    CANCELLED = "cancelled"


FINAL_STATES = (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class ScorecardSource(str, Enum):
    SERVICE = "service"  # produced and signed by this service
    PUSHED = "pushed"  # uploaded with `robustlab push`


def _enum(e: type[Enum], name: str) -> SAEnum:
    return SAEnum(e, name=name, native_enum=False, values_callable=lambda x: [m.value for m in x], length=32)


class Base(DeclarativeBase):
    pass


class Project(Base):
    __tablename__ = "projects"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Token(Base):
    """An API token: only its sha256 is stored (tokens are 256-bit random, so a fast hash suffices)."""

    __tablename__ = "tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # shown in listings to tell tokens apart
    role: Mapped[Role] = mapped_column(_enum(Role, "role"))
    project_id: Mapped[int | None] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class Model(Base):
    __tablename__ = "models"
    __table_args__ = (UniqueConstraint("project_id", "name"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Version(Base):
    """One model version: an uploaded weights file (``artifact_key``) or a built-in spec (``spec``)."""

    __tablename__ = "versions"
    __table_args__ = (UniqueConstraint("model_id", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    version: Mapped[str] = mapped_column(String(100))
    spec: Mapped[str | None] = mapped_column(String(200), nullable=True)  # e.g. zoo:digits-cnn
    artifact_key: Mapped[str | None] = mapped_column(String(300), nullable=True)
    file_format: Mapped[str | None] = mapped_column(String(32), nullable=True)  # safetensors | state-dict
    arch: Mapped[str | None] = mapped_column(String(200), nullable=True)
    sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Job(Base):
    """An evaluation: what was asked (suite, policy, baseline, options) and how it went."""

    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # uuid4 hex
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    version_id: Mapped[int] = mapped_column(ForeignKey("versions.id", ondelete="CASCADE"), index=True)
    suite: Mapped[str] = mapped_column(String(100))
    policy_key: Mapped[str | None] = mapped_column(String(300), nullable=True)
    baseline: Mapped[str | None] = mapped_column(String(100), nullable=True)  # a job id of this project
    options: Mapped[dict[str, object]] = mapped_column(JSON, default=dict)
    state: Mapped[JobState] = mapped_column(_enum(JobState, "job_state"), index=True, default=JobState.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str] = mapped_column(Text, default="")
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)  # the gate's 0/1/2/3
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    submitted_by: Mapped[int | None] = mapped_column(ForeignKey("tokens.id", ondelete="SET NULL"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


class StoredScorecard(Base):
    """A scorecard the service holds: its file, signature status against the trust store, gate."""

    __tablename__ = "scorecards"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), unique=True, nullable=True)
    version_id: Mapped[int | None] = mapped_column(ForeignKey("versions.id", ondelete="SET NULL"), nullable=True)
    source: Mapped[ScorecardSource] = mapped_column(_enum(ScorecardSource, "scorecard_source"))
    artifact_key: Mapped[str] = mapped_column(String(300))
    sha256: Mapped[str] = mapped_column(String(64))
    signature_state: Mapped[str] = mapped_column(String(32))  # robustlab.signing.SignatureState value
    signature_key_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    signature_message: Mapped[str] = mapped_column(Text, default="")
    gate_outcome: Mapped[str | None] = mapped_column(String(32), nullable=True)
    gate_exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    headline: Mapped[dict[str, float]] = mapped_column(JSON, default=dict)  # metric key -> value
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Artifact(Base):
    """A stored file of a job or pushed scorecard (scorecard, signature, report, CSV, policy, ...)."""

    __tablename__ = "artifacts"
    __table_args__ = (UniqueConstraint("key"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), nullable=True, index=True)
    scorecard_id: Mapped[int | None] = mapped_column(ForeignKey("scorecards.id", ondelete="CASCADE"), nullable=True)
    kind: Mapped[str] = mapped_column(String(32))  # scorecard | report | signature | samples | policy | junit | gate | model
    key: Mapped[str] = mapped_column(String(300))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TrustedKey(Base):
    """A public key in the service's trust store (raw Ed25519, base64)."""

    __tablename__ = "trusted_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key_id: Mapped[str] = mapped_column(String(32), unique=True)
    public_key: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
