"""Detector ``extras_gap``: minus the gap between the two largest logits, divided by ``scale``."""

from __future__ import annotations

import torch

from robustlab.ood.base import Detector


class LogitGap(Detector):
    name = "extras_gap"

    def __init__(self, *, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = float(scale)

    def config(self) -> dict[str, float]:
        return {"scale": self.scale}

    @torch.no_grad()
    def score(self, model, x: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
        top2 = model(x).float().topk(2, dim=1).values
        return -(top2[:, 0] - top2[:, 1]) / self.scale
