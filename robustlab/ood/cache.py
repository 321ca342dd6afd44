"""On-disk cache of fitted detector statistics (safetensors, no pickle).

Keyed by the model's fingerprint (its sha256, or a hash of its weights), the fit data's content hash,
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
    """The model file's sha256 when known, else a sha256 of its weights, buffers and contract."""
    if model.info.sha256:
        return str(model.info.sha256)
    h = hashlib.sha256(json.dumps(model.info.to_dict(), sort_keys=True, default=str).encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


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
