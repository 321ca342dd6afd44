"""Initial schema: projects, tokens, models, versions, jobs, scorecards, artifacts, trusted keys.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _enum(name: str, *values: str) -> sa.Enum:
    return sa.Enum(*values, name=name, native_enum=False, length=32)


def upgrade() -> None:
    op.create_table(
        "projects",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        _ts("created_at"),
    )
    op.create_table(
        "tokens",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("role", _enum("role", "admin", "submitter", "auditor"), nullable=False),
        sa.Column("project_id", sa.Integer(), sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=True),
        _ts("created_at"),
        _ts("revoked_at", True),
    )
    op.create_table(
        "models",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("project_id", sa.Integer(), sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("name", sa.String(100), nullable=False),
        _ts("created_at"),
        sa.UniqueConstraint("project_id", "name"),
    )
    op.create_table(
        "versions",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("model_id", sa.Integer(), sa.ForeignKey("models.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("version", sa.String(100), nullable=False),
        sa.Column("spec", sa.String(200), nullable=True),
        sa.Column("artifact_key", sa.String(300), nullable=True),
        sa.Column("file_format", sa.String(32), nullable=True),
        sa.Column("arch", sa.String(200), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        _ts("created_at"),
        sa.UniqueConstraint("model_id", "version"),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("project_id", sa.Integer(), sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("version_id", sa.Integer(), sa.ForeignKey("versions.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("suite", sa.String(100), nullable=False),
        sa.Column("policy_key", sa.String(300), nullable=True),
        sa.Column("baseline", sa.String(100), nullable=True),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("state", _enum("job_state", "queued", "running", "succeeded", "failed", "cancelled"), nullable=False, index=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("worker", sa.String(200), nullable=True),
        _ts("heartbeat_at", True),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("mlflow_run_id", sa.String(64), nullable=True),
        sa.Column("submitted_by", sa.Integer(), sa.ForeignKey("tokens.id", ondelete="SET NULL"), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, index=True),
        _ts("started_at", True),
        _ts("finished_at", True),
    )
    op.create_table(
        "scorecards",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("project_id", sa.Integer(), sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=True, unique=True),
        sa.Column("version_id", sa.Integer(), sa.ForeignKey("versions.id", ondelete="SET NULL"), nullable=True),
        sa.Column("source", _enum("scorecard_source", "service", "pushed"), nullable=False),
        sa.Column("artifact_key", sa.String(300), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("signature_state", sa.String(32), nullable=False),
        sa.Column("signature_key_id", sa.String(32), nullable=True),
        sa.Column("signature_message", sa.Text(), nullable=False),
        sa.Column("gate_outcome", sa.String(32), nullable=True),
        sa.Column("gate_exit_code", sa.Integer(), nullable=True),
        sa.Column("headline", sa.JSON(), nullable=False),
        _ts("created_at"),
    )
    op.create_table(
        "artifacts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("project_id", sa.Integer(), sa.ForeignKey("projects.id", ondelete="CASCADE"), nullable=False, index=True),
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=True, index=True),
        sa.Column("scorecard_id", sa.Integer(), sa.ForeignKey("scorecards.id", ondelete="CASCADE"), nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("key", sa.String(300), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        _ts("created_at"),
        sa.UniqueConstraint("key"),
    )
    op.create_table(
        "trusted_keys",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("key_id", sa.String(32), nullable=False, unique=True),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        _ts("created_at"),
    )


def downgrade() -> None:
    for t in ("trusted_keys", "artifacts", "scorecards", "jobs", "versions", "models", "tokens", "projects"):
        op.drop_table(t)
