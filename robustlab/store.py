"""Per-batch results stored as they complete, so an interrupted run resumes where it stopped.

A SQLite file in the output folder (``OUT/results.sqlite``). The run's *fingerprint* is a flat
mapping of everything that can change a number (resolved model contract, weights hash, data ids and
content hash, suite hash, seed, batch size, precision and fast paths, tool version). Every entry is
keyed by a hash of that fingerprint, the check scope and a batch key, and carries a sha256 checksum
over (fingerprint hash, key, value), so an edited or damaged entry is detected. ``--resume`` reuses
entries only when the stored fingerprint equals the new one and every checksum holds; otherwise the
resume is refused with one line naming what changed. Without ``--resume`` the store is cleared (unless it
holds an unfinished run of the very same fingerprint: that run is refused as a forgotten ``--resume``, or, when an
entry fails its checksum, moved aside), and a file that is not a readable SQLite database is moved aside
(``results.sqlite.corrupt-<time>``) so the output folder stays usable.

:class:`OutputLock` holds an exclusive lock on the output folder for the whole run, so two runs never
interleave their batches in one folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import sqlite3
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from .errors import DISK_FULL_HINT, OutputError, ResumeError, RobustlabError, sqlite_disk_problem

log = logging.getLogger(__name__)

LOCK_NAME = ".robustlab.lock"


def params_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _checksum(fp: str, key: str, value: str) -> str:
    return hashlib.sha256(f"{fp}\0{key}\0{value}".encode()).hexdigest()


def _short(v: Any, n: int = 40) -> str:
    s = json.dumps(v, sort_keys=True, default=str)
    return s if len(s) <= n else s[: n - 1] + "…"


def _flat(fp: dict[str, Any]) -> dict[str, Any]:
    """A fingerprint with its mappings (``options``) spread into ``options.<name>`` entries, so a refused resume
    names the setting that changed (a missing one reads ``null``)."""
    out: dict[str, Any] = {}
    for k, v in fp.items():
        if isinstance(v, dict):
            out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            out[k] = v
    return out


class ResultStore:
    """Key-value store of JSON results for one run folder.

    Args:
        path: SQLite file, or None for an in-memory store (nothing is resumable).
        fingerprint: flat mapping that identifies everything that can change a result; entries of
            other fingerprints are never used.
    """

    def __init__(self, path: Path | None, fingerprint: dict[str, Any]) -> None:
        self.path = path
        self.fingerprint = json.loads(json.dumps(fingerprint, sort_keys=True, default=str))
        self._fp = params_hash(self.fingerprint)
        self._lock = threading.Lock()
        self._broken: str | None = None
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:  # not a database, or damaged beyond opening
            self._raise_if_disk(exc)  # a full or read-only disk is not a damaged store: never move it aside
            self._broken = str(exc)
            self._db = self._open(memory=True)

    def _open(self, *, memory: bool = False) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path) if self.path and not memory else ":memory:", check_same_thread=False, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT)")
            db.execute("CREATE TABLE IF NOT EXISTS results (k TEXT PRIMARY KEY, v TEXT, c TEXT)")
            cols = {r[1] for r in db.execute("PRAGMA table_info(results)")}
            if "c" not in cols:  # written by a robustlab without checksums: never reused
                db.execute("DROP TABLE results")
                db.execute("CREATE TABLE results (k TEXT PRIMARY KEY, v TEXT, c TEXT)")
                db.execute("DELETE FROM meta")
            db.commit()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _raise_if_disk(self, exc: BaseException) -> None:
        hint = sqlite_disk_problem(exc)
        if hint is not None and self.path is not None and not hint.startswith("the disk is full"):
            try:  # SQLite reports some full-disk writes as I/O errors: say what the file system says
                st = os.statvfs(self.path.parent)
                if st.f_bavail * st.f_frsize < 1 << 20:
                    hint = DISK_FULL_HINT
            except OSError:
                pass
        if hint is not None:
            raise OutputError(f"cannot write the result store {self.path} (SQLite: {exc}); {hint}.") from exc

    def _where(self) -> str:
        return str(self.path.parent) if self.path else "memory"

    # -- run-level ----------------------------------------------------------------------
    def stored_fingerprint(self) -> dict[str, Any] | None:
        row = self._db.execute("SELECT v FROM meta WHERE k='fingerprint'").fetchone()
        if not row:
            return None
        try:
            fp = json.loads(row[0]) if isinstance(row[0], (str, bytes)) else None
        except ValueError:  # JSONDecodeError, or text that is not UTF-8
            fp = None
        if not isinstance(fp, dict):
            raise ResumeError(
                f"cannot resume: the run fingerprint stored in {self.path} is damaged (not a JSON object), so the file was edited "
                "or damaged; run without --resume (or with another --out) to start afresh."
            )
        return fp

    def _reset_broken(self) -> None:
        """Move an unreadable store aside and start a fresh one (runs without --resume only)."""
        assert self.path is not None
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        self._db.close()
        for suffix in ("", "-wal", "-shm"):
            p = Path(str(self.path) + suffix)
            if p.exists():
                os.replace(p, Path(str(aside) + suffix))
        log.warning("%s was not a readable result store (%s); moved it to %s and started afresh.", self.path, self._broken, aside.name)
        self._broken = None
        self._db = self._open()

    def _verify_entries(self) -> None:
        bad = 0
        first = ""
        for k, v, c in self._db.execute("SELECT k, v, c FROM results"):
            if not isinstance(k, str) or not isinstance(v, str) or not k.startswith(self._fp + "|") or c != _checksum(self._fp, k, v):
                bad += 1
                first = first or str(k)
        if bad:
            raise ResumeError(
                f"cannot resume: {bad} stored batch result(s) in {self.path} fail their checksum (first: {first[:80]}), so the file was edited or damaged; "
                "run without --resume (or with another --out) to start afresh."
            )

    def begin(self, *, resume: bool) -> int:
        """Start a run. With ``resume``, keep matching entries (refuse if the run changed or an
        entry fails its checksum); without, clear the store, unless it holds an interrupted run of the same
        settings (then refuse: a forgotten ``--resume``). Returns the number of entries kept."""
        if self._broken is not None:
            if resume:
                raise ResumeError(f"cannot resume: {self.path} is not a readable result store ({self._broken}); run without --resume to start afresh.")
            self._reset_broken()
        try:
            with self._lock:
                if resume:
                    self._check_resumable()
                else:
                    self._refuse_forgotten_resume()
                    self._db.execute("DELETE FROM results")
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('fingerprint', ?)", (json.dumps(self.fingerprint, sort_keys=True),))
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('unfinished', '1')")
                self._db.commit()
            return int(self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0])
        except sqlite3.DatabaseError as exc:  # damage that only shows on reading
            self._raise_if_disk(exc)
            if resume or self.path is None:
                raise ResumeError(f"cannot resume: {self.path} is damaged ({exc}); run without --resume to start afresh.") from exc
            self._broken = str(exc)
            self._reset_broken()
            return self.begin(resume=False)

    def _refuse_forgotten_resume(self) -> None:
        """A run without ``--resume`` must not throw away the batches of an interrupted run of the very same
        settings (hours of certification, say): that is a forgotten ``--resume``. Another setting, a run that
        finished, or a store written before this marker existed is cleared as before."""
        if self.path is None or self._db.execute("SELECT v FROM meta WHERE k='unfinished'").fetchone() is None:
            return
        n = int(self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0])
        if not n:
            return
        try:
            self._check_resumable()  # the same fingerprint, every checksum holding: what --resume would reuse
        except ResumeError as exc:  # changed settings, or damage: --resume is refused, so a fresh run must not be
            if self._same_settings():  # damage (an edited value, a broken page): set aside, as the README says, never dropped unsaid
                self._broken = str(exc).removeprefix("cannot resume: ").split("; run without --resume")[0]
                self._reset_broken()
            return
        raise ResumeError(
            f"{self._where()} holds {n} stored batch results of an interrupted run with these same settings; rerun with --resume to "
            f"continue it, or delete {self.path} (or pass another --out) to start afresh."
        )

    def _same_settings(self) -> bool:
        """Whether the stored run had this run's settings, so a refused resume means damage (a missing or
        unreadable fingerprint beside stored results is damage too)."""
        try:
            old = self.stored_fingerprint()
        except (ResumeError, sqlite3.DatabaseError):
            return True
        return old is None or old == self.fingerprint

    def mark_finished(self) -> None:
        """Record that the run went through every check: a later run without ``--resume`` may clear the store."""
        with self._lock:
            self._db.execute("DELETE FROM meta WHERE k='unfinished'")
            self._db.commit()

    def _check_resumable(self) -> None:
        ok = self._db.execute("PRAGMA quick_check").fetchone()
        if not ok or ok[0] != "ok":
            raise ResumeError(f"cannot resume: {self.path} is damaged (SQLite: {ok[0] if ok else '?'}); run without --resume to start afresh.")
        old = self.stored_fingerprint()
        n = int(self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0])
        if old is None:
            if n:
                raise ResumeError(f"cannot resume: {self.path} holds results but no run fingerprint; run without --resume to start afresh.")
            return
        if old != self.fingerprint:
            was, now = _flat(old), _flat(self.fingerprint)  # 'options.ood_fit_data', not a cut-off 'options: {...'
            changed = sorted(k for k in set(was) | set(now) if was.get(k) != now.get(k))
            detail = "; ".join(f"{k}: {_short(was.get(k))} -> {_short(now.get(k))}" for k in changed[:3])
            raise ResumeError(
                f"cannot resume: {', '.join(changed)} changed since the interrupted run in {self._where()} ({detail}); "
                "run without --resume (or with another --out) to start afresh."
            )
        self._verify_entries()

    # -- entries ------------------------------------------------------------------------
    def _key(self, scope: str, key: str) -> str:
        return f"{self._fp}|{scope}|{key}"

    def get(self, scope: str, key: str) -> Any | None:
        k = self._key(scope, key)
        row = self._db.execute("SELECT v, c FROM results WHERE k=?", (k,)).fetchone()
        if not row:
            return None
        if row[1] != _checksum(self._fp, k, row[0]):
            log.warning("stored result %s fails its checksum; recomputing it.", k[:80])
            return None
        try:
            return json.loads(row[0])
        except ValueError:  # edited along with its checksum: not JSON
            log.warning("stored result %s is not valid JSON; recomputing it.", k[:80])
            return None

    def put(self, scope: str, key: str, value: Any) -> None:
        k = self._key(scope, key)
        v = json.dumps(value)
        with self._lock:
            try:
                self._db.execute("INSERT OR REPLACE INTO results VALUES (?, ?, ?)", (k, v, _checksum(self._fp, k, v)))
                self._db.commit()
            except sqlite3.DatabaseError as exc:
                self._raise_if_disk(exc)
                raise

    def scope(self, check_id: str, params: Any) -> str:
        """Scope name for a check: its id plus a hash of its parameters."""
        return f"{check_id}#{params_hash(params)}"

    def close(self) -> None:
        self._db.close()


class OutputLockedError(RobustlabError):
    """Another run holds the output folder."""


class OutputLock:
    """Exclusive advisory lock on an output folder (``OUT/.robustlab.lock``), held for a whole run.

    The lock is an ``flock`` on the file, so the kernel releases it when the process dies (even by
    ``kill -9``); the file's content (pid, host, start time, command) only names the holder. The
    lock is re-entrant within one process, so the runner and the command that wraps it can both
    take it.
    """

    _held: dict[str, tuple[IO[str], int]] = {}
    _guard = threading.Lock()

    def __init__(self, out_dir: Path, *, name: str = LOCK_NAME, command: str = "") -> None:
        self.path = Path(out_dir) / name
        self.command = command

    def __enter__(self) -> "OutputLock":
        self.acquire()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

    def acquire(self) -> None:
        key = str(self.path.resolve())
        with self._guard:
            if key in self._held:
                f, n = self._held[key]
                self._held[key] = (f, n + 1)
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            f = open(self.path, "a+", encoding="utf-8", errors="backslashreplace")  # a non-UTF-8 path in the command
            try:
                import fcntl

                fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except ImportError:  # pragma: no cover - no flock on this platform: run unlocked
                log.debug("no fcntl; output folder %s is not locked", self.path.parent)
            except OSError:
                f.seek(0)
                holder = " ".join(f.read().split())[:200] or "another process"
                f.close()
                raise OutputLockedError(
                    f"output folder {self.path.parent} is in use by another run ({holder}); wait for it to finish or pass another --out."
                ) from None
            try:
                f.seek(0)
                f.truncate()
                f.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%dT%H:%M:%S')}: {self.command}\n")
                f.flush()
            except OSError as exc:  # a full disk: name the file
                try:
                    f.close()  # flushes what is left, so it fails again on a full disk
                except OSError:
                    pass
                raise OSError(exc.errno, exc.strerror, str(self.path)) from exc
            self._held[key] = (f, 1)

    def release(self) -> None:
        key = str(self.path.resolve())
        with self._guard:
            if key not in self._held:
                return
            f, n = self._held[key]
            if n > 1:
                self._held[key] = (f, n - 1)
                return
            del self._held[key]
            f.close()  # closing the descriptor releases the flock
