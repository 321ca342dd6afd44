"""Alembic environment: runs on the connection :func:`robustlab.service.db.migrate` passes in
(``config.attributes["connection"]``), else on ``sqlalchemy.url``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from robustlab.service.models import Base

config = context.config
target = Base.metadata


def run() -> None:
    conn = config.attributes.get("connection")
    if conn is not None:
        context.configure(connection=conn, target_metadata=target, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(str(config.get_main_option("sqlalchemy.url")))
    with engine.connect() as c:
        context.configure(connection=c, target_metadata=target, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run()
