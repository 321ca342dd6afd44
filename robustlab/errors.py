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


def _printable(value: object) -> str:
    """A path or name as one printable line (non-UTF-8 bytes and control characters escaped)."""
    s = os.fsdecode(value) if isinstance(value, (bytes, os.PathLike)) else str(value)
    return ascii(s)[1:-1] if not s.isprintable() or any(0xDC80 <= ord(c) <= 0xDCFF for c in s) else s


def user_error_from(exc: BaseException) -> RobustlabError | None:
    """The user-facing error for an exception a user's environment can cause (file system, encoding,
    SQLite), or ``None`` for a genuine internal error."""
    import errno
    import sqlite3

    if isinstance(exc, OSError) and exc.errno is not None:
        where = f": {_printable(exc.filename)}" if exc.filename is not None else ""
        hint = {
            errno.ENOSPC: "free some disk space or pass another --out",
            errno.EDQUOT: "free some disk space or pass another --out",
            errno.EROFS: "the file system is read-only; pass a writable --out",
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
        return RobustlabError(f"a path or text is not valid UTF-8 ({_printable(exc)}); rename it or re-save the file as UTF-8.")
    env_words = ("not a database", "malformed", "locked", "disk", "readonly", "read-only", "unable to open", "corrupt")
    if isinstance(exc, sqlite3.DatabaseError) and any(w in str(exc).lower() for w in env_words):
        return OutputError(f"a result store or tracking database is unusable (SQLite: {_printable(exc)}); pass another --out or remove the damaged file.")
    return None
