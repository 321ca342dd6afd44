"""The robustlab service: an HTTP API (FastAPI) over the existing pipelines, a job queue in the
database, embedded worker processes, and a SQL store of projects, models, versions, evaluations,
scorecards and their signature status.

Layer: above the pipelines, beside the commands (it never imports :mod:`robustlab.commands` or
:mod:`robustlab.cli`; those import it). Server-only dependencies (fastapi, uvicorn, sqlalchemy,
alembic, python-multipart) come with the ``[service]`` extra and are imported only here.
"""

from __future__ import annotations

__all__: list[str] = []
