"""What model loading takes and what a loader returns (shared by the loaders and the file readers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn


@dataclass
class LoadOptions:
    """Everything besides the spec that affects loading (CLI flags win over file metadata)."""

    arch: str | None = None
    trust_code: bool = False
    download: bool = False
    model_dir: str | None = None
    device: str = "cpu"
    overrides: dict[str, Any] = field(default_factory=dict)  # ModelInfo fields from the CLI


@dataclass
class LoadedNet:
    """A loaded network and what its source says of it (format, path, sha256, metadata)."""

    net: nn.Module
    info: dict[str, Any]

def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
