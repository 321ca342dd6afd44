"""A third-party attack for the plugin tests (entry point ``robustlab.attacks``): only ``run()``."""

from __future__ import annotations

import torch

from robustlab.attacks.base import FixedEpsilonAttack
from robustlab.attacks.geometry import normalize_gradient
from robustlab.attacks.threat import Norm


class SignSteps(FixedEpsilonAttack):
    """``steps`` signed-gradient steps of size eps / steps from the clean point (no projection
    here: the base projects onto the ball, clips to the bounds and re-checks)."""

    def __init__(self, *, norm: Norm | str = Norm.LINF, steps: int = 3) -> None:
        self.norm = Norm.parse(norm)
        self.steps = steps

    def run(self, model, x, y, eps, *, seeds, early_stop, targeted, bounds):
        xa = x.clone()
        for _ in range(self.steps):
            xg = xa.detach().requires_grad_(True)
            with torch.enable_grad():
                loss = torch.nn.functional.cross_entropy(model(xg), y)
            (g,) = torch.autograd.grad(loss, xg)
            xa = (xa + eps / self.steps * normalize_gradient(g, self.norm)).clamp(*bounds)
        return xa
