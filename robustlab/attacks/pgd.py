"""Projected gradient descent (PGD) and the fast gradient sign method (FGSM), Linf and L2.

This is the stable API other parts of robustlab (adversarial training, certification) use:

    PGD(norm=Norm.LINF, steps=40, rel_stepsize=0.025, random_start=True, restarts=1, loss="ce")
        .perturb(model, x, y, eps, seeds=None, early_stop=True, targeted=False, bounds=None)

With ``early_stop`` a point leaves the computation as soon as it is adversarial (its first
adversarial iterate is returned): robust accuracy is unchanged (a point found adversarial stays
non-robust) while the work shrinks. Without it every point runs all steps and the last iterate is
returned (foolbox semantics), which is what adversarial training usually wants.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ..errors import SuiteError
from ..buckets import rows_after_exit
from ..seeding import derive_seed
from .base import ATTACKS, FixedEpsilonAttack
from .geometry import attack_loss, is_adversarial, normalize_gradient, project, uniform_in_ball
from .threat import Loss, Norm

__all__ = ["PGD", "FGSM", "Norm"]


@ATTACKS.register("pgd")
class PGD(FixedEpsilonAttack):
    """Projected gradient descent with random start and restarts (Madry et al. 2018).

    Each step: ``x <- clip_bounds(x0 + proj_eps(x + alpha * d(grad) - x0))`` with ``d`` = sign
    (Linf) or L2-normalised gradient, ``alpha = abs_stepsize`` or ``rel_stepsize * eps``. The loss
    is maximised (untargeted) or its targeted variant is maximised (targeted).

    Shapes: x (N, C, H, W) in bounds, y (N,) int64 -> x_adv (N, C, H, W).

    References: Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks",
    ICLR 2018; checked against foolbox 3.3.4 ``LinfPGD`` / ``L2PGD`` (tests/test_attacks_pgd.py).
    """

    def __init__(
        self,
        *,
        norm: Norm | str = Norm.LINF,
        steps: int = 40,
        rel_stepsize: float = 0.025,
        abs_stepsize: float | None = None,
        random_start: bool = True,
        restarts: int = 1,
        loss: Loss | str = "ce",
    ) -> None:
        if steps < 1:
            raise SuiteError(f"PGD needs at least 1 step, got steps={steps}.")
        if restarts < 1:
            raise SuiteError(f"PGD needs at least 1 restart, got restarts={restarts}.")
        step = abs_stepsize if abs_stepsize is not None else rel_stepsize
        if not (step > 0 and math.isfinite(step)):
            raise SuiteError(f"the PGD step size must be a positive finite number, got {step}; set rel_stepsize or abs_stepsize.")
        self.norm = Norm.parse(norm)
        self.steps = int(steps)
        self.rel_stepsize = float(rel_stepsize)
        self.abs_stepsize = None if abs_stepsize is None else float(abs_stepsize)
        self.random_start = bool(random_start)
        self.restarts = int(restarts)
        self.loss = Loss.parse(loss)
        if self.loss is Loss.DLR_TARGETED:
            raise SuiteError("PGD takes loss ce, dlr or margin; the DLR-targeted loss belongs to apgd-t.")

    def stepsize(self, eps: float) -> float:
        return self.abs_stepsize if self.abs_stepsize is not None else self.rel_stepsize * eps

    def run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        eps: float,
        *,
        seeds: Sequence[int],
        early_stop: bool,
        targeted: bool,
        bounds: tuple[float, float],
    ) -> torch.Tensor:
        lo, hi = bounds
        n = x.shape[0]
        alpha = self.stepsize(eps)
        best = x.clone()
        best_loss = torch.full((n,), float("-inf"), device=x.device)
        done = torch.zeros(n, dtype=torch.bool, device=x.device)
        for r in range(self.restarts):
            idx = (~done).nonzero()[:, 0]
            if idx.numel() == 0:
                break
            rows = rows_after_exit(idx.numel(), n) if r > 0 and early_stop else idx.numel()
            if rows > idx.numel():  # a restart on the points left, filled to a bucket size with done ones
                idx = torch.cat([idx, done.nonzero()[:, 0][: rows - idx.numel()]]).sort()[0]
            x0, yy = x[idx], y[idx]
            if self.random_start:
                rs = [derive_seed(int(seeds[i]), "pgd-start", r) for i in idx.tolist()]
                noise = uniform_in_ball(rs, x.shape[1:], self.norm, device=x.device, dtype=x.dtype)
                xa = (x0 + eps * noise).clamp(lo, hi)
            else:
                xa = x0.clone()
            for t in range(self.steps + 1):
                xa = xa.detach().requires_grad_(True)
                with torch.enable_grad():
                    logits = model(xa)
                    loss = attack_loss(logits, yy, self.loss, targeted=targeted)
                adv = is_adversarial(logits.detach(), yy, targeted=targeted)
                live = ~done[idx]  # rows kept only to hold a bucket size belong to points already done
                last = t == self.steps
                if early_stop or last:
                    # record: adversarial points are done; at the end keep the highest-loss iterate.
                    new = adv & live
                    if new.any():
                        hit = idx[new]
                        best[hit] = xa.detach()[new]
                        done[hit] = True
                    if last:
                        rest = live & ~adv
                        better = rest & (loss.detach() > best_loss[idx])
                        if better.any():
                            best[idx[better]] = xa.detach()[better]
                            best_loss[idx[better]] = loss.detach()[better]
                        break
                grad = torch.autograd.grad(loss.sum(), xa)[0]
                if early_stop:
                    keep = ~done[idx]
                    if not bool(keep.any()):
                        break
                    rows = rows_after_exit(int(keep.sum()), keep.numel())
                    if rows < keep.numel():  # drop broken rows down to a bucket size (see rows_after_exit)
                        keep[(~keep).nonzero()[:, 0][: rows - int(keep.sum())]] = True
                        xa, x0, yy, idx, grad = xa[keep], x0[keep], yy[keep], idx[keep], grad[keep]
                with torch.no_grad():
                    step = xa + alpha * normalize_gradient(grad, self.norm)
                    xa = (x0 + project(step - x0, eps, self.norm)).clamp(lo, hi)
        return best


@ATTACKS.register("fgsm")
class FGSM(PGD):
    """Fast gradient sign method (Linf) / fast gradient method (L2): one step of size eps.

    Shapes: x (N, C, H, W) in bounds, y (N,) -> x_adv (N, C, H, W).

    References: Goodfellow et al., "Explaining and Harnessing Adversarial Examples", ICLR 2015;
    foolbox 3.3.4 ``LinfFastGradientAttack`` / ``L2FastGradientAttack``.
    """

    def __init__(self, *, norm: Norm | str = Norm.LINF, random_start: bool = False, loss: Loss | str = "ce") -> None:
        super().__init__(norm=norm, steps=1, rel_stepsize=1.0, random_start=random_start, restarts=1, loss=loss)
