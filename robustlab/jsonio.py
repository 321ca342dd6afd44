"""Strict JSON in and atomic JSON out, for scorecards, signatures and reports (torch-free).

Reading refuses what makes a document ambiguous (duplicate keys, NaN/Infinity, lone surrogates);
writing goes through a temp file and a rename, so a crash or a full disk never leaves half a file.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["atomic_write_text", "dumps_compact", "json_safe_text", "loads_strict", "read_strict_json"]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name} (JSON has no NaN or Infinity)")


def _finite_float(text: str) -> float:
    v = float(text)
    if v in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:40]} is beyond the range of a double (it would read as infinity)")
    return v


def _double_int(text: str) -> int:
    v = int(text)
    try:
        float(v)
    except OverflowError:
        raise ValueError(f"integer of {len(text)} digits is beyond the range of a double") from None
    return v


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {ascii(k)}")
        out[k] = v
    return out


def _check_text(obj: Any) -> None:
    stack = [obj]
    while stack:
        o = stack.pop()
        if isinstance(o, str):
            try:
                o.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError(f"lone surrogate in the string {ascii(o)[:60]}") from None
        elif isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, list):
            stack.extend(o)


def loads_strict(text: str) -> Any:
    """Parse JSON, refusing what makes a document ambiguous: duplicate keys (parsers disagree on
    which value wins), NaN/Infinity (not JSON), numbers beyond a double's range (``1e999`` would read as
    infinity, ``10**400`` overflows any float use) and lone UTF-16 surrogates (not text). Raises ``ValueError``."""
    obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_double_int)
    _check_text(obj)
    return obj


def read_strict_json(path: Path, *, what: str = "robustlab scorecard", fix: str = "") -> Any:
    """:func:`loads_strict` on a UTF-8 file; problems become one-line ``RobustlabError``. ``what``
    names the kind of file and ``fix`` says what to do (defaults: a scorecard's)."""
    from .errors import RobustlabError, path_problem

    if not path.is_file():
        raise RobustlabError(f"{path} {path_problem(path)}; {fix or 'pass the scorecard.json that `robustlab evaluate` wrote'}.")
    data = path.read_bytes()
    if data.startswith((b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff")):
        raise RobustlabError(f"{path} starts with a byte order mark (an editor saved it as UTF-8 with BOM or UTF-16); save it as plain UTF-8 "
                             f"without a BOM, or {fix or 'pass a scorecard written by robustlab'}.")
    try:
        return loads_strict(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RobustlabError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}); {fix or 'pass a scorecard written by robustlab'}.") from exc
    except RecursionError as exc:
        raise RobustlabError(f"{path} nests too deeply to be a {what}; {fix or 'pass a scorecard written by robustlab'}.") from exc
    except ValueError as exc:  # JSONDecodeError is a ValueError
        raise RobustlabError(f"{path} is not a valid {what}: bad JSON ({' '.join(str(exc).split())[:200]}); {fix or 'regenerate or re-sign it'}.") from exc


def json_safe_text(s: str) -> str:
    """``s`` with every lone surrogate written as a visible escape: a non-UTF-8 byte of a path
    (surrogate-escaped by Python, e.g. ``b"\\xff"`` -> ``"\\udcff"``) becomes the four characters ``\\xff``, any
    other lone surrogate ``\\udXXX``. Strict JSON readers (ours included) refuse lone surrogates."""
    if not any(0xD800 <= ord(c) <= 0xDFFF for c in s):
        return s
    return "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else f"\\u{ord(c):04x}" if 0xD800 <= ord(c) <= 0xDFFF else c for c in s)


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8; a lone surrogate as a backslash escape) to a temp file beside ``path``
    and rename it over ``path``: a full disk or a crash leaves the old file, never half a new one.
    A file-system error names ``path``, not the temp file."""
    try:
        return _atomic_write(path, text)
    except OSError as exc:
        if exc.errno is None or exc.filename == str(path):
            raise
        raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path)) from exc


def _atomic_write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; a scorecard is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


#: the temp files of :func:`atomic_write_text` and of adversarial-example shards: ``.<name>.<8 random>.tmp``
_TEMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")


def remove_stale_temp_files(folder: Path, *, recursive: bool = False) -> int:
    """Delete the temp files an atomic write left behind when its process was killed (``kill -9``, power
    loss) before the rename; return how many. Only call it while holding the output folder's lock: then
    no write is in progress. Files of other names are never touched."""
    if not folder.is_dir():
        return 0
    removed = 0
    for f in folder.rglob("*.tmp") if recursive else folder.glob("*.tmp"):
        if _TEMP_NAME.match(f.name) and f.is_file() and not f.is_symlink():
            try:
                f.unlink()
                removed += 1
            except FileNotFoundError:
                pass
    return removed


def dumps_compact(obj: Any, indent: int, level: int) -> str:
    """``json.dumps(obj, indent=indent)``, except that lists without containers take one line."""
    if isinstance(obj, dict) and obj:
        pad, inner = " " * (indent * level), " " * (indent * (level + 1))
        items = (f"{inner}{json.dumps(str(k))}: {dumps_compact(v, indent, level + 1)}" for k, v in obj.items())
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, (list, tuple)) and obj:
        if not any(isinstance(v, (dict, list, tuple)) for v in obj):
            return json.dumps(obj, separators=(",", ":"), allow_nan=False)
        pad, inner = " " * (indent * level), " " * (indent * (level + 1))
        return "[\n" + ",\n".join(inner + dumps_compact(v, indent, level + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj, allow_nan=False)
