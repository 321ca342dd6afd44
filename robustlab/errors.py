"""Errors a user can cause.

Every error a user can trigger (a bad path, a wrong shape, an unknown name, a value outside the
declared range) is a :class:`RobustlabError`. The CLI prints its message as one line on stderr and
exits with :attr:`RobustlabError.exit_code` (2). The message always says what to do next.
"""

from __future__ import annotations

import os
from pathlib import Path


class RobustlabError(Exception):
    """Base class of all user-facing errors (exit code 2)."""

    exit_code: int = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


class UnknownNameError(RobustlabError, KeyError):
    """An unknown registry name or spec prefix."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class ModelLoadError(RobustlabError):
    """A model file is missing, corrupt, or cannot be turned into a classifier."""


class TrustError(RobustlabError):
    """A model format that can run code was asked for without the explicit trust flag."""


class DataError(RobustlabError):
    """Data is missing, malformed, out of bounds, or has labels outside the classes."""


class ModelOutputError(RobustlabError):
    """The model's output is not (N, num_classes) logits, or is not finite."""


class SuiteError(RobustlabError):
    """A suite file is invalid: YAML errors, unknown keys or checks, impossible budgets."""


class PolicyError(RobustlabError):
    """A gate policy file is invalid."""


class ResumeError(RobustlabError):
    """A run cannot be resumed because the model, data or suite changed."""


class OutputError(RobustlabError):
    """The output folder cannot be written (not a folder, read-only, disk full, bad path)."""


#: exit code of an unexpected internal error (a bug); the traceback goes to ``OUT/crash-*.log``
EXIT_INTERNAL = 4

_CRASH_DIR: list[str] = []


def set_crash_dir(path: "str | os.PathLike[str] | None") -> None:
    """Name the folder where the CLI writes a crash log if the command fails unexpectedly."""
    _CRASH_DIR[:] = [os.fspath(path)] if path is not None else []


def crash_dir() -> "Path | None":
    return Path(_CRASH_DIR[0]) if _CRASH_DIR else None


def cause_line(exc: BaseException, limit: int = 300) -> str:
    """One line that says what ``exc`` is about: its only line; for the TorchScript interpreter's and other
    tracebacks carried in the message, the last line (the error itself, after the serialized code)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    line = lines[-1] if len(lines) > 1 and ("Traceback" in str(exc) or "TorchScript" in lines[0]) else lines[0]
    return line[:limit]


def printable(value: object) -> str:
    """A path or name as one printable line (non-UTF-8 bytes and control characters escaped)."""
    s = os.fsdecode(value) if isinstance(value, (bytes, os.PathLike)) else str(value)
    return ascii(s)[1:-1] if not s.isprintable() or any(0xDC80 <= ord(c) <= 0xDCFF for c in s) else s


def path_problem(path: "str | os.PathLike[str]") -> str:
    """Why a path that should be a readable file is not: "does not exist" or "is not a regular file (...)"."""
    return "is not a regular file (a folder, device or pipe)" if os.path.exists(path) else "does not exist"


#: the disk-full advice shared by every command that writes files
DISK_FULL_HINT = ("the disk is full: free some space and rerun the command (an `evaluate` rerun with --resume continues from "
                  "the batches already stored), or write to another disk")
READ_ONLY_HINT = "the file system is read-only: write to a folder on a writable file system (another --out or output file)"

_SQLITE_DISK = {"SQLITE_FULL": DISK_FULL_HINT, "SQLITE_READONLY": READ_ONLY_HINT}


def sqlite_disk_problem(exc: BaseException) -> str | None:
    """The advice for an SQLite error caused by the disk (full, read-only, I/O, cannot open), else ``None``
    (corruption and misuse are not disk problems)."""
    import sqlite3

    if not isinstance(exc, sqlite3.OperationalError):
        return None
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    base = "_".join(name.split("_")[:2])  # SQLITE_IOERR_WRITE -> SQLITE_IOERR
    if base in _SQLITE_DISK:
        return _SQLITE_DISK[base]
    msg = str(exc).lower()
    if "disk is full" in msg:
        return DISK_FULL_HINT
    if "readonly" in msg or "read-only" in msg:
        return READ_ONLY_HINT
    if base in ("SQLITE_IOERR", "SQLITE_CANTOPEN", "SQLITE_PERM") or "disk i/o error" in msg or "unable to open" in msg:
        return "the disk failed a write or the file cannot be opened (full, read-only or removed?): free space or write to another --out"
    return None


def is_disk_failure(exc: BaseException) -> bool:
    """True for a failure of the output's storage (disk full, quota, read-only), which no check
    should record as its own error: the run stops with exit 2 and keeps what it stored."""
    import errno

    if isinstance(exc, OutputError):
        return True
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO)
    return sqlite_disk_problem(exc) is not None


def user_error_from(exc: BaseException) -> RobustlabError | None:
    """The user-facing error for an exception a user's environment can cause (file system, encoding,
    SQLite), or ``None`` for a genuine internal error."""
    import errno
    import sqlite3

    if isinstance(exc, OSError) and exc.errno is not None:
        where = f": {printable(exc.filename)}" if exc.filename is not None else ""
        hint = {
            errno.ENOSPC: DISK_FULL_HINT,
            errno.EDQUOT: DISK_FULL_HINT.replace("the disk is full", "the disk quota is used up"),
            errno.EROFS: READ_ONLY_HINT,
            errno.EACCES: "check the permissions or pass another path",
            errno.EPERM: "check the permissions or pass another path",
            errno.ENOTDIR: "a part of the path is a file, not a folder; pass another path",
            errno.EEXIST: "a file is in the way; pass another path",
            errno.EISDIR: "a folder was given where a file is needed; pass a file",
            errno.ENOENT: "check the path",
            errno.ENAMETOOLONG: "use a shorter path",
            errno.ELOOP: "the path loops through symbolic links; pass another path",
        }.get(exc.errno)
        if hint is None:
            return None
        return OutputError(f"{exc.strerror or os.strerror(exc.errno)}{where}; {hint}.")
    if isinstance(exc, UnicodeError):
        return RobustlabError(f"a path or text is not valid UTF-8 ({printable(exc)}); rename it or re-save the file as UTF-8.")
    disk = sqlite_disk_problem(exc)
    if disk is not None:
        return OutputError(f"a result store or tracking database cannot be written (SQLite: {printable(exc)}); {disk}.")
    env_words = ("not a database", "malformed", "locked", "disk", "readonly", "read-only", "unable to open", "corrupt")
    if isinstance(exc, sqlite3.DatabaseError) and any(w in str(exc).lower() for w in env_words):
        return OutputError(f"a result store or tracking database is unusable (SQLite: {printable(exc)}); pass another --out or remove the damaged file.")
    return None
