"""How far a run has got: the number of batch results in its resume store (``results.sqlite``)."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def stored_batches(db: Path) -> int:
    """Batch results stored so far in ``db`` (0 while it does not exist or is being created)."""
    if not db.is_file():
        return 0
    try:
        with sqlite3.connect(str(db), timeout=1) as c:
            return int(c.execute("SELECT COUNT(*) FROM results").fetchone()[0])
    except sqlite3.Error:
        return 0
