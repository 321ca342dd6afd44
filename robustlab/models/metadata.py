"""Validation of model metadata (the input contract) from every source: CLI flags, sidecar JSON
files, a safetensors header, a checkpoint's ``robustlab`` entry and plugins.

Each value is checked for type and range and converted to the form :class:`ModelInfo` holds, so a
string ``num_classes``, a list where a mapping belongs or a three-channel mean on a one-channel model
ends as one :class:`~robustlab.errors.ModelLoadError` line that names the source and what to fix.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from ..errors import ModelLoadError, printable

log = logging.getLogger(__name__)

#: the metadata keys a model file or sidecar may set
META_KEYS = ("num_classes", "input_shape", "bounds", "mean", "std", "class_names", "dataset", "feature_layer", "architecture")


def _fail(source: str, key: str, what: str, value: Any) -> ModelLoadError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return ModelLoadError(f"model metadata from {source}: {key!r} must be {what}, got {shown}; fix {source}.")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))


def _numbers(source: str, key: str, v: Any, *, n: int | None = None) -> tuple[float, ...]:
    if not isinstance(v, (list, tuple)) or not v or not all(_number(e) for e in v) or (n is not None and len(v) != n):
        raise _fail(source, key, f"a list of {n or 'one or more'} finite numbers", v)
    return tuple(float(e) for e in v)


def validate_metadata(meta: Any, source: str) -> dict[str, Any]:
    """Check the known keys of ``meta`` (a mapping from ``source``) and return them normalised.

    Unknown keys are kept as they are (they are ignored by the loader). Raises
    :class:`ModelLoadError` naming ``source`` on the first bad value.
    """
    if not isinstance(meta, dict):
        raise ModelLoadError(f"model metadata from {source} must be a JSON object (a mapping of keys such as num_classes, mean, std), got {type(meta).__name__}; fix {source}.")
    out = dict(meta)
    for key in META_KEYS:
        v = meta.get(key)
        if v is None:
            continue
        if key == "num_classes":
            if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= 10_000_000:
                raise _fail(source, key, "a positive integer", v)
        elif key == "input_shape":
            if not isinstance(v, (list, tuple)) or len(v) != 3 or not all(isinstance(e, int) and not isinstance(e, bool) and 1 <= e <= 100_000 for e in v):
                raise _fail(source, key, "three positive integers C, H, W", v)
            out[key] = tuple(int(e) for e in v)
        elif key == "bounds":
            b = _numbers(source, key, v, n=2)
            if not b[0] < b[1]:
                raise _fail(source, key, "LOW, HIGH with LOW < HIGH", v)
            out[key] = b
        elif key in ("mean", "std"):
            out[key] = _numbers(source, key, v)
            if key == "std" and not all(s > 0 for s in out[key]):
                raise _fail(source, key, "positive numbers", v)
        elif key == "class_names":
            if not isinstance(v, (list, tuple)) or not v or not all(isinstance(c, str) and c.strip() for c in v):
                raise _fail(source, key, "a list of non-empty strings", v)
            dup = sorted({c for c in v if list(v).count(c) > 1})
            if dup:
                raise _fail(source, key, f"distinct names (duplicated: {', '.join(map(repr, dup[:3]))})", v)
            out[key] = tuple(v)
        elif not isinstance(v, str) or not v.strip():
            raise _fail(source, key, "a non-empty string", v)
    return out


def check_consistency(meta: dict[str, Any], source: str = "the model metadata and flags") -> None:
    """Cross-checks of the merged contract: channel counts of mean/std/input shape, class names."""
    chans = {k: len(meta[k]) for k in ("mean", "std") if meta.get(k) is not None}
    if meta.get("input_shape") is not None:
        c = int(meta["input_shape"][0])
        for k, n in chans.items():
            if n not in (1, c):
                raise ModelLoadError(f"{source}: --{k} has {n} value(s) but the model takes {c}-channel images; {'give 1 value' if c == 1 else f'give {c} values (one per channel) or 1 for all'}.")
    if len(set(chans.values())) > 1 and 1 not in chans.values():
        raise ModelLoadError(f"{source}: --mean has {chans['mean']} values but --std has {chans['std']}; give one per channel for both.")
    names, ncls = meta.get("class_names"), meta.get("num_classes")
    if names is not None and ncls is not None and len(names) != ncls:
        raise ModelLoadError(f"{len(names)} class names for {ncls} classes; fix --class-names or --num-classes.")


def no_constant(name: str) -> Any:
    """``parse_constant`` hook of :func:`json.loads`: NaN and Infinity are not JSON numbers."""
    raise ValueError(f"{name} is not a number")


def _load_sidecar(cand: Path) -> Any:
    try:
        return json.loads(cand.read_bytes().decode("utf-8"), parse_constant=no_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        msg = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ModelLoadError(f"sidecar metadata {cand} is not valid UTF-8 JSON ({msg}); fix or remove it.") from exc


def sidecar_names(path: Path) -> list[Path]:
    """The sidecar files that may describe the weights file ``path``, e.g. for ``model.pt``:
    ``model.json`` and ``model.pt.json`` (named after the file without or with its extension)."""
    out: list[Path] = []
    for cand in (path.with_suffix(".json"), path.with_name(path.name + ".json")):
        if cand != path and cand not in out:
            out.append(cand)
    return out


def read_sidecar(path: Path) -> dict[str, Any]:
    """Metadata next to a weights file: ``<stem>.json`` or ``<name>.json`` (``model.json`` or
    ``model.pt.json`` for ``model.pt``; if both exist they must agree), else ``robustlab.json`` in the
    same folder."""
    found = [(c, _load_sidecar(c)) for c in sidecar_names(path) if c.is_file()]
    if len(found) == 2 and found[0][1] != found[1][1]:
        (a, _), (b, _) = found
        raise ModelLoadError(f"two sidecar files describe {printable(path.name)} and disagree: {printable(a.name)} and {printable(b.name)}; keep one of them (delete or merge the other).")
    if not found:
        folder = path.parent / "robustlab.json"
        if folder.is_file() and folder != path:
            found = [(folder, _load_sidecar(folder))]
    if not found:
        return {}
    cand, d = found[0]
    log.info("model metadata from %s", cand)
    return validate_metadata(d, f"the sidecar {cand.name}")
