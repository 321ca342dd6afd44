"""Corruption ``extras_dim``: darkens each image by 15% per severity level, plus seeded per-image jitter."""

from __future__ import annotations

from typing import Sequence

import torch


def dim(x: torch.Tensor, severity: int, seeds: Sequence[int]) -> torch.Tensor:
    jitter = torch.tensor([torch.rand(1, generator=torch.Generator().manual_seed(int(s))).item() for s in seeds], dtype=x.dtype, device=x.device)
    factor = (1.0 - 0.15 * severity - 0.02 * jitter).clamp(0.0, 1.0).view(-1, 1, 1, 1)
    return (x * factor).clamp(0.0, 1.0)
