"""On-disk cache of fitted detector statistics (safetensors, no pickle).

Keyed by the model's fingerprint (its contract, network code and weights: :func:`model_fingerprint`), the fit data's content hash,
the detector's name and its fit configuration. The folder is ``$ROBUSTLAB_CACHE/ood`` when that
variable is set, else ``~/.cache/robustlab/ood``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch

if TYPE_CHECKING:
    from ..models.wrapper import RobustModel

log = logging.getLogger(__name__)


def cache_dir() -> Path:
    root = os.environ.get("ROBUSTLAB_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "robustlab"
    return base / "ood"


def model_fingerprint(model: "RobustModel") -> str:
    """A sha256 of everything that decides the model's function: its contract (spec, architecture,
    bounds, normalisation, input shape, classes), the source file of its network's class, and its
    weights (the file's sha256 when known, else the weights and buffers themselves).

    The file's sha256 alone is not enough: the same state dict under other ``--mean/--std`` or another
    ``factory:`` forward is another function, whose fitted statistics must not be reused.
    """
    contract = {k: v for k, v in model.info.to_dict().items() if k not in ("path", "extra", "trusted")}
    h = hashlib.sha256(json.dumps(contract, sort_keys=True, default=str).encode())
    h.update(_class_source_sha256(type(model.net)).encode())
    if not model.info.sha256:
        from ..models.files import state_dict_sha256

        h.update(state_dict_sha256(model).encode())
    return h.hexdigest()


def _class_source_sha256(cls: type) -> str:
    """sha256 of the file that defines ``cls`` (its forward), or its qualified name when there is none."""
    import inspect

    name = f"{cls.__module__}.{cls.__qualname__}"
    try:
        src = inspect.getsourcefile(cls)
        if src:
            return name + ":" + hashlib.sha256(Path(src).read_bytes()).hexdigest()
    except (TypeError, OSError):
        pass
    return name


def cache_key(**parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def load_state(key: str) -> dict[str, torch.Tensor] | None:
    """Cached tensors for ``key``, or None (missing or unreadable: the caller refits)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    p = cache_dir() / f"{key}.safetensors"
    if not p.is_file():
        return None
    try:
        return load_file(str(p))
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        log.warning("ignoring unreadable detector cache %s (%s); refitting", p, exc)
        return None


def save_state(key: str, state: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> Path | None:
    """Write atomically; a read-only or full disk only costs the cache (logged), never the run."""
    from safetensors.torch import save_file

    d = cache_dir()
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
        os.close(fd)
        save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, tmp, metadata={k: json.dumps(v, default=str) for k, v in meta.items()})
        target = d / f"{key}.safetensors"
        os.replace(tmp, target)
        return target
    except OSError as exc:
        log.warning("could not write the detector cache in %s (%s)", d, exc)
        return None
