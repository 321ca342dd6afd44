"""One writer at a time for a SQLite MLflow tracking store shared by several processes."""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ..errors import RobustlabError

#: how long a run waits for another process logging to the same SQLite store (seconds).
STORE_LOCK_TIMEOUT = 120.0


def _sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (None for servers and file stores)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    from urllib.parse import unquote_to_bytes

    return Path(os.fsdecode(unquote_to_bytes(tracking_uri[len("sqlite:///"):].split("?", 1)[0])))


@contextmanager
def store_lock(tracking_uri: str, *, timeout: float = STORE_LOCK_TIMEOUT) -> Iterator[None]:
    """Serialise writers of one SQLite tracking store across processes.

    MLflow creates and migrates a new SQLite store on first use, and two processes doing that at
    once both fail and leave the store half-migrated (measured: two concurrent runs sharing
    MLFLOW_TRACKING_URI, neither recorded). A lock file beside the database (``<db>.lock``,
    ``flock``) makes the second writer wait; servers do their own locking.
    """
    db = _sqlite_path(tracking_uri)
    if db is None:
        yield
        return
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; MLflow's own retries apply
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a+b") as fh:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RobustlabError(f"the MLflow store {db} stayed locked by another process for {timeout:.0f} s; log again later or pass --no-mlflow.") from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def close_dead_runs(client: Any, experiment_id: str, tracking_uri: str) -> int:
    """Mark KILLED the robustlab runs of ``experiment_id`` still RUNNING in a SQLite store; call it holding
    :func:`store_lock`. robustlab creates and terminates every run inside that lock, so a RUNNING one there
    belongs to a process killed while logging (SIGKILL, SIGTERM, a crash), not to a live writer; left alone
    it would stay RUNNING for ever beside the run a ``--resume`` logs. Servers are left alone (no lock)."""
    if _sqlite_path(tracking_uri) is None:
        return 0
    try:
        import fcntl  # noqa: F401 - without it store_lock held nothing, so a RUNNING run may be live
    except ImportError:
        return 0
    try:
        runs = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING' and tags.`robustlab.version` != ''", max_results=1000)
        for run in runs:
            client.set_terminated(run.info.run_id, "KILLED")
    except Exception:  # noqa: BLE001 - tidying up must never cost the new run its record
        logging.getLogger(__name__).debug("MLflow: could not close dead runs in %s", tracking_uri, exc_info=True)
        return 0
    return len(runs)
