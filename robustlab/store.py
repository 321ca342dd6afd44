"""Per-batch results stored as they complete, so an interrupted run resumes where it stopped.

A SQLite file in the output folder (``OUT/results.sqlite``). Every entry is keyed by the run's
fingerprint (model sha256, data hash, seed), the check id, a hash of the check's parameters and a
batch key. Values are JSON. ``--resume`` reuses entries whose fingerprint matches; otherwise the
store is cleared (or the resume refused with a clear message).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from .errors import ResumeError


def params_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class ResultStore:
    """Key-value store of JSON results for one run folder.

    Args:
        path: SQLite file, or None for an in-memory store (nothing is resumable).
        fingerprint: identifies model, data and seed; entries of other fingerprints are never used.
    """

    def __init__(self, path: Path | None, fingerprint: dict[str, Any]) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self._fp = params_hash(fingerprint)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path) if path else ":memory:", check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT)")
        self._db.execute("CREATE TABLE IF NOT EXISTS results (k TEXT PRIMARY KEY, v TEXT)")
        self._db.commit()

    # -- run-level ----------------------------------------------------------------------
    def stored_fingerprint(self) -> dict[str, Any] | None:
        row = self._db.execute("SELECT v FROM meta WHERE k='fingerprint'").fetchone()
        return json.loads(row[0]) if row else None

    def begin(self, *, resume: bool) -> int:
        """Start a run. With ``resume``, keep matching entries (refuse if the run changed);
        without, clear the store. Returns the number of entries kept."""
        old = self.stored_fingerprint()
        with self._lock:
            if resume and old is not None and old != self.fingerprint:
                changed = sorted(k for k in set(old) | set(self.fingerprint) if old.get(k) != self.fingerprint.get(k))
                raise ResumeError(
                    f"cannot resume: {', '.join(changed)} changed since the interrupted run in {self.path.parent if self.path else '?'}; run without --resume (or with another --out) to start afresh."
                )
            if not resume:
                self._db.execute("DELETE FROM results")
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('fingerprint', ?)", (json.dumps(self.fingerprint, sort_keys=True),))
            self._db.commit()
        return int(self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0])

    # -- entries ------------------------------------------------------------------------
    def _key(self, scope: str, key: str) -> str:
        return f"{self._fp}|{scope}|{key}"

    def get(self, scope: str, key: str) -> Any | None:
        row = self._db.execute("SELECT v FROM results WHERE k=?", (self._key(scope, key),)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, scope: str, key: str, value: Any) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO results VALUES (?, ?)", (self._key(scope, key), json.dumps(value)))
            self._db.commit()

    def scope(self, check_id: str, params: Any) -> str:
        """Scope name for a check: its id plus a hash of its parameters."""
        return f"{check_id}#{params_hash(params)}"

    def close(self) -> None:
        self._db.close()
