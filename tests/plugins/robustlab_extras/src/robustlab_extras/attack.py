"""A third-party attack: keyword-only hyperparameters and one ``run()``; the base class validates
bounds, projects onto the ball, clips, sweeps epsilons and re-checks every example."""

from __future__ import annotations

import torch

from robustlab.attacks.base import FixedEpsilonAttack
from robustlab.attacks.geometry import normalize_gradient
from robustlab.attacks.threat import Norm


class SignSteps(FixedEpsilonAttack):
    """``steps`` steepest-ascent steps of size eps / steps on the cross-entropy. x (N, C, H, W) -> same."""

    def __init__(self, *, norm: Norm | str = Norm.LINF, steps: int = 3) -> None:
        self.norm = Norm.parse(norm)
        self.steps = steps

    def run(self, model, x, y, eps, *, seeds, early_stop, targeted, bounds):  # type: ignore[no-untyped-def]
        xa = x.clone()
        for _ in range(self.steps):
            xg = xa.detach().requires_grad_(True)
            with torch.enable_grad():
                loss = torch.nn.functional.cross_entropy(model(xg), y)
            (g,) = torch.autograd.grad(loss, xg)
            xa = (xa + eps / self.steps * normalize_gradient(g, self.norm)).clamp(*bounds)
        return xa
