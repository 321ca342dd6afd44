"""Factories used by the tests through ``factory:rl_test_models:NAME`` (tests/plugins on PYTHONPATH)."""

import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self, num_classes: int = 10, out: int | None = None, nan: bool = False) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.fc = nn.Linear(64, out or num_classes)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(self.fc.weight.shape, generator=g) * 0.1)
            self.fc.bias.zero_()
        self.nan = nan

    def forward(self, x):
        out = self.fc(x.flatten(1))
        return out * float("nan") if self.nan else out


def tiny(num_classes: int = 10) -> nn.Module:
    return Tiny(num_classes)


def wrong_shape() -> nn.Module:
    return Tiny(out=7)


def nan_logits() -> nn.Module:
    return Tiny(nan=True)


def not_a_module():
    return 42


def plugin_load(arg: str, **options):
    """Entry point of a fake third-party model plugin (group robustlab.models)."""
    if arg != "tiny":
        raise ValueError(arg)
    return Tiny()
