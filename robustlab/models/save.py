"""Save a model in robustlab's own format: safetensors weights with the metadata in the header.

Such files load without ``--trust-code`` (safetensors cannot run code, and the architecture named in
the metadata must be one robustlab builds itself: ``zoo-arch:``, ``torchvision:`` or ``timm:``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import RobustlabError


def save_model(net: nn.Module, path: str | Path, *, architecture: str, metadata: dict[str, Any]) -> Path:
    """Write ``net``'s state dict and ``metadata`` (num_classes, bounds, mean, std, ...) to ``path``."""
    from safetensors.torch import save_file

    if not architecture.split(":", 1)[0] in ("zoo-arch", "torchvision", "timm"):
        raise RobustlabError(f"cannot save architecture {architecture!r} in a trusted file; use a zoo-arch:, torchvision: or timm: architecture.")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    meta = {k: (list(v) if isinstance(v, tuple) else v) for k, v in {**metadata, "architecture": architecture}.items()}
    tmp = p.with_name(p.name + ".tmp")
    save_file(sd, str(tmp), metadata={"robustlab": json.dumps(meta, sort_keys=True), "format": "pt"})
    tmp.chmod(0o644)
    tmp.replace(p)
    return p


def unwrap(net: nn.Module) -> nn.Module:
    """The inner network of a RobustModel (what gets saved)."""
    inner = getattr(net, "net", None)
    return inner if isinstance(inner, nn.Module) else net


__all__ = ["save_model", "unwrap", "torch"]
