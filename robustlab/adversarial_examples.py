"""Adversarial examples written to disk in batches (``evaluate --save-adversarial``), and read back.

Layout under the run's output folder (no pickles, nothing executable)::

    OUT/adversarial/index.json                            what is there (see below)
    OUT/adversarial/<check id>/eps_<e>/<start>-<stop>.npz one shard per batch [start, stop)
    OUT/adversarial/<check id>/minimal/<start>-<stop>.npz minimal-norm checks: one folder, no epsilon

A shard is an uncompressed NumPy ``.npz`` (read with ``allow_pickle=False``) holding, for the samples
``start .. stop-1`` of the evaluation data, in data order:

* ``ids`` (n,) unicode: sample ids; ``y`` (n,) int64: clean labels;
* ``x_adv`` (n, C, H, W), the dtype the check evaluated (float32), in the model's input bounds: the
  input the attack returned at this epsilon (the clean image for clean errors);
* ``pred`` (n,) int64: the fp32 model's prediction on ``x_adv``;
* ``correct`` (n,) bool: clean prediction correct; ``success`` (n,) bool: ``x_adv`` is a valid
  adversarial example of this epsilon (re-checked: finite, in the ball, in bounds, misclassified);
* ``norm`` (n,) float32: ``||x_adv - x||`` in the check's norm.

Shards are written atomically (a temp file renamed over the name), so a half-written shard never
exists under its name. Beside each shard, ``<start>-<stop>.npz.sha256`` (``sha256sum`` format,
written right after the shard) records the hash of what was written; ``index.json`` (written
atomically after each epsilon of each check) lists every finished shard with its size and that
sha256, and readers verify the hash. ``--resume`` never re-hashes a shard into the index: one that
no longer matches its recorded sha256 refuses the resume (exit 2, naming the file: delete it and it
is recomputed), and one with no recorded hash (a run killed between writing it and its hash) is
recomputed.

A check's outcome at ``eps_j`` is the worst case over its sweep (:mod:`robustlab.checks.sweep_merge`):
a point not broken at ``eps_j`` but broken at a smaller ``eps_i`` counts the ``eps_i`` example.
:class:`robustlab.adversarial_readers.WorstCase` applies that rule when reading, so it returns exactly the example each point was
counted with.

A minimal-norm check (``minimal_norm``) saves one folder ``minimal/`` whatever its epsilons: ``x_adv``
is the smallest valid adversarial example its attack found (the clean image for a clean error or
where none was found), ``norm`` its re-checked norm exactly as the check counted it (0 where
``x_adv`` is the clean image), ``success`` a valid example was found. At budget ``eps`` the check
counts a point broken when it is a clean error or ``success`` and ``norm <= eps``;
:class:`MinimalAt` reads that outcome: the minimal example where ``norm <= eps``, else the clean image.
"""

from __future__ import annotations

import bisect
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import RobustlabError
from .jsonio import atomic_write_text, read_strict_json
from .signing import sha256_file

FORMAT = "robustlab-adversarial-examples/1"
DIRNAME = "adversarial"
INDEX = "index.json"
HASH_SUFFIX = ".sha256"
MINIMAL = "minimal"
FIELDS = ("ids", "y", "x_adv", "pred", "correct", "success", "norm")
_SHARD = re.compile(r"^(\d{9})-(\d{9})\.npz$")
_HEX = re.compile(r"^[0-9a-f]{64}$")


def root_of(out_dir: Path) -> Path:
    return Path(out_dir) / DIRNAME


def eps_dir(root: Path, check_id: str, eps: float) -> Path:
    from .metric_keys import eps_segment, legal_segment

    return root / legal_segment(check_id) / eps_segment(eps)


def minimal_dir(root: Path, check_id: str) -> Path:
    from .metric_keys import legal_segment

    return root / legal_segment(check_id) / MINIMAL


def shard_path(folder: Path, start: int, stop: int) -> Path:
    return folder / f"{start:09d}-{stop:09d}.npz"


def hash_path(shard: Path) -> Path:
    """The file beside ``shard`` that records its sha256 when it was written."""
    return shard.with_name(shard.name + HASH_SUFFIX)


def write_shard(path: Path, *, ids: Sequence[str], y: np.ndarray, x_adv: np.ndarray, pred: np.ndarray, correct: Sequence[bool] | np.ndarray, success: Sequence[bool] | np.ndarray, norm: np.ndarray) -> int:
    """Write one shard atomically (temp file beside it, fsync, rename), then its sha256 file; return
    its size in bytes. The old sha256 file goes first, so a crash in between leaves a shard without
    one (recomputed on ``--resume``), never a shard with another shard's hash."""
    n = len(ids)
    arrays = {"ids": np.asarray([str(i) for i in ids], dtype=np.str_), "y": np.asarray(y, dtype=np.int64), "x_adv": np.ascontiguousarray(x_adv),
              "pred": np.asarray(pred, dtype=np.int64), "correct": np.asarray(correct, dtype=bool), "success": np.asarray(success, dtype=bool),
              "norm": np.asarray(norm, dtype=np.float32)}
    assert all(a.shape[0] == n for a in arrays.values()), {k: a.shape for k, a in arrays.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    hash_path(path).unlink(missing_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        digest = sha256_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    atomic_write_text(hash_path(path), f"{digest}  {path.name}\n")
    return path.stat().st_size


def recorded_sha256(path: Path, indexed: dict[str, str] | None = None, *, root: Path | None = None) -> str | None:
    """The sha256 recorded for shard ``path`` when it was written: its ``.sha256`` file, else its row
    in ``indexed`` (file relative to ``root`` -> sha256, from ``index.json``); ``None`` where neither
    exists. A ``.sha256`` file that is not one hash was edited: an error."""
    side = hash_path(path)
    try:
        text = side.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        text = None
    except OSError as exc:
        raise RobustlabError(f"cannot read {side} ({exc}); delete {path} (it is recomputed) and rerun with --resume, or rerun without --resume.") from exc
    if text is not None:
        parts = text.split()
        if len(parts) != 2 or not _HEX.match(parts[0]) or parts[1] != path.name:
            raise RobustlabError(f"{side} is not the sha256 of {path.name}; it was changed or damaged: delete {path} (it is recomputed) and rerun with --resume, or rerun without --resume.")
        return parts[0]
    if indexed is not None and root is not None:
        return indexed.get(str(path.relative_to(root)))
    return None


def verify_shard(path: Path, expected: str) -> str:
    """``expected`` when shard ``path`` still has that sha256; an error naming the file otherwise."""
    if sha256_file(path) != expected:
        raise RobustlabError(
            f"adversarial example shard {path} does not match the sha256 recorded when it was written; it was changed or damaged: "
            "delete it (it is recomputed) and rerun with --resume, or rerun without --resume."
        )
    return expected


def indexed_hashes(doc: dict[str, Any]) -> dict[str, str]:
    """Every shard ``index.json`` lists: file (relative to the root) -> sha256."""
    out: dict[str, str] = {}
    for c in doc.get("checks", {}).values():
        if not isinstance(c, dict):
            continue
        for e in [*(c.get("by_eps") or {}).values(), *([c[MINIMAL]] if isinstance(c.get(MINIMAL), dict) else [])]:
            for r in e.get("shards", []) if isinstance(e, dict) else []:
                if isinstance(r, dict) and isinstance(r.get("file"), str) and isinstance(r.get("sha256"), str):
                    out[r["file"]] = r["sha256"]
    return out


def read_shard(path: Path, *, sha256: str | None = None) -> dict[str, np.ndarray]:
    """The arrays of one shard (no pickles); ``sha256`` (from the index) is verified when given."""
    try:
        if sha256 is not None and sha256_file(path) != sha256:
            raise RobustlabError(f"adversarial example shard {path} does not match its sha256 in {INDEX}; it was changed or damaged: rerun without --resume.")
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in FIELDS}
    except (OSError, ValueError, KeyError) as exc:
        raise RobustlabError(f"cannot read adversarial example shard {path} ({exc}); rerun without --resume.") from exc
    n = out["ids"].shape[0]
    if any(a.shape[0] != n for a in out.values()):
        raise RobustlabError(f"adversarial example shard {path} has arrays of different lengths; rerun without --resume.")
    return out


def tiling(folder: Path, n: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """(finished shards that tile ``[0, n)`` in order, gaps ``[a, b)`` no finished shard covers)."""
    found: dict[int, list[int]] = {}
    if folder.is_dir():
        for f in folder.iterdir():
            m = _SHARD.match(f.name)
            if m and int(m.group(1)) < int(m.group(2)) <= n:
                found.setdefault(int(m.group(1)), []).append(int(m.group(2)))
    shards: list[tuple[int, int]] = []
    gaps: list[tuple[int, int]] = []
    pos = 0
    starts = sorted(found)
    while pos < n:
        if pos in found:
            stop = max(found[pos])
            shards.append((pos, stop))
            pos = stop
        else:
            nxt = starts[bisect.bisect_right(starts, pos)] if bisect.bisect_right(starts, pos) < len(starts) else n
            gaps.append((pos, nxt))
            pos = nxt
    return shards, gaps


def load_index(root: Path) -> dict[str, Any]:
    path = root / INDEX
    if not path.is_file():
        return {"format": FORMAT, "checks": {}}
    fix = f"remove the folder {root} and rerun with --resume (its examples are recomputed), or run without --resume"
    doc = read_strict_json(path, what="index of saved adversarial examples", fix=fix)
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("checks"), dict):
        raise RobustlabError(f"{path} is not a {FORMAT} index; {fix}.")
    return doc


def check_index_for_resume(root: Path) -> None:
    """Refuse ``--resume`` before any check runs (exit 2, the scorecard untouched) when ``index.json``
    cannot be read, or a shard on disk no longer matches the sha256 recorded when it was written (its
    ``.sha256`` file, else ``index.json``), rather than letting every check that saves or reads
    examples error, or re-indexing changed examples as verified."""
    from .errors import ResumeError

    try:
        indexed = indexed_hashes(load_index(root))
        for path in sorted(root.rglob("*.npz")) if root.is_dir() else []:
            if _SHARD.match(path.name) and path.is_file():
                expected = recorded_sha256(path, indexed, root=root)
                if expected is not None:  # none recorded: the check recomputes it
                    verify_shard(path, expected)
    except RobustlabError as exc:
        raise ResumeError(f"cannot resume: {exc}") from exc


def unrecorded(root: Path, folder: Path, n: int) -> list[tuple[int, int]]:
    """The shards of ``folder`` tiling ``[0, n)`` that have no recorded sha256 (neither a ``.sha256``
    file nor a row in ``index.json``): written by a run killed before it recorded the hash, so
    nothing vouches for them; the caller recomputes them."""
    indexed = indexed_hashes(load_index(root))
    shards, _gaps = tiling(folder, n)
    return [(a, b) for a, b in shards if recorded_sha256(shard_path(folder, a, b), indexed, root=root) is None]


def _entry(root: Path, folder: Path, n: int) -> dict[str, Any]:
    shards, gaps = tiling(folder, n)
    assert not gaps, f"shards missing in {folder}: {gaps}"
    indexed = indexed_hashes(load_index(root))
    rows: list[dict[str, Any]] = []
    for a, b in shards:
        path = shard_path(folder, a, b)
        expected = recorded_sha256(path, indexed, root=root)
        if expected is None:  # never hash unvouched content into the index
            raise RobustlabError(f"adversarial example shard {path} has no recorded sha256; delete it (it is recomputed) and rerun with --resume, or rerun without --resume.")
        rows.append({"file": str(path.relative_to(root)), "start": a, "stop": b, "bytes": path.stat().st_size, "sha256": verify_shard(path, expected)})
    return {"n": n, "bytes": sum(int(r["bytes"]) for r in rows), "shards": rows}


def _write_index(root: Path, doc: dict[str, Any]) -> None:
    doc["bytes"] = sum(int(e["bytes"]) for cc in doc["checks"].values() for e in [*cc.get("by_eps", {}).values(), *([cc[MINIMAL]] if MINIMAL in cc else [])])
    atomic_write_text(root / INDEX, _dumps(doc))


def record_epsilon(root: Path, *, check_id: str, check: str, norm: str, eps: float, epsilons: Sequence[float], n: int, sweep: bool = True) -> dict[str, Any]:
    """Index the finished shards of one (check, epsilon), which must tile the ``n`` samples, each
    with the sha256 recorded when it was written (verified against the file; an error where it
    differs or none was recorded), into ``index.json`` (atomically); return the index entry."""
    from .metric_keys import eps_segment

    entry: dict[str, Any] = {"eps": float(eps), **_entry(root, eps_dir(root, check_id, eps), n)}
    doc = load_index(root)
    c = doc["checks"].setdefault(check_id, {})
    c.update({"check": check, "norm": norm, "sweep": sweep, "epsilons": [float(e) for e in epsilons]})
    c.setdefault("by_eps", {})[eps_segment(eps)] = entry
    _write_index(root, doc)
    return entry


def record_minimal(root: Path, *, check_id: str, check: str, norm: str, epsilons: Sequence[float], n: int) -> dict[str, Any]:
    """Index the finished shards of a minimal-norm check (folder ``minimal/``), readable at each of
    its ``epsilons`` through :class:`MinimalAt`; return the index entry."""
    entry = _entry(root, minimal_dir(root, check_id), n)
    doc = load_index(root)
    doc["checks"][check_id] = {"check": check, "norm": norm, "kind": MINIMAL, "sweep": False, "epsilons": [float(e) for e in epsilons], MINIMAL: entry}
    _write_index(root, doc)
    return entry


def _dumps(doc: dict[str, Any]) -> str:
    import json

    return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def __getattr__(name: str) -> Any:
    """The readers live in :mod:`robustlab.adversarial_readers`; ``adversarial_examples.WorstCase`` keeps working."""
    if name in ("Batch", "WorstCase", "MinimalAt"):
        from . import adversarial_readers

        return getattr(adversarial_readers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
