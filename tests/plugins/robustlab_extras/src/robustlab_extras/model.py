"""Model loader ``extras:NAME``: a seeded linear classifier on 1x8x8 digits (``extras:linear``)."""

from __future__ import annotations

import torch
from torch import nn


def load(arg: str, *, device: str = "cpu", download: bool = False) -> nn.Module:
    if arg != "linear":
        raise ValueError(f"robustlab-extras has no model {arg!r}; use extras:linear")
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        net[1].weight.copy_(torch.randn(10, 64, generator=g) * 0.1)
        net[1].bias.zero_()
    return net.to(device)
