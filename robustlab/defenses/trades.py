"""TRADES: the trade-off between accuracy and robustness (Zhang et al. 2019)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks.base import Norm, normalize_gradient, project
from ..errors import SuiteError
from ..seeding import per_sample_noise
from ._budget import resolve_eps
from .base import DEFENSES, DefenseMethod, DefenseParams, LossOutput, ValMetric, eval_mode, positive


@dataclass(frozen=True)
class TRADESParams(DefenseParams):
    """The TRADES reference defaults: beta = 6, Linf, eps = the data set's standard budget
    (CIFAR 0.031), 10 steps of 0.007 (= eps * 0.007 / 0.031), start at x + 0.001 * N(0, I)."""

    beta: float = field(default=6.0, metadata={"help": "Weight of the KL term."})
    norm: str = field(default="linf", metadata={"help": "Threat model of adversarial training (linf or l2)."})
    eps: float | None = field(default=None, metadata={"help": "Training budget in the model's input units: e.g. 8/255 for inputs in [0, 1], 8 for --bounds 0,255 [default: the data set's standard budget in the model's input scale: CIFAR 8/255, MNIST 0.3, digits 0.1]."})
    steps: int = field(default=10, metadata={"help": "Attack steps per batch."})
    rel_stepsize: float = field(default=0.007 / 0.031, metadata={"cli": "step-ratio", "help": "Attack step / eps."})
    init_std: float = field(default=0.001, metadata={"help": "Std of the Gaussian start around x, in units of the input range like --sigma (times hi - lo for --bounds lo,hi)."})

    def validate(self) -> None:
        Norm.parse(self.norm)
        positive("eps", self.eps)
        positive("rel_stepsize", self.rel_stepsize, allow_none=False)
        if self.beta < 0:
            raise SuiteError(f"beta must be >= 0 (TRADES uses 6), got {self.beta}.")
        if self.steps < 1:
            raise SuiteError(f"steps must be at least 1, got {self.steps}.")
        if self.init_std < 0:
            raise SuiteError(f"init_std must be >= 0, got {self.init_std}.")


def kl_to_clean(logits_adv: torch.Tensor, p_clean: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(p_clean || softmax(logits_adv)), shape (N,)."""
    return F.kl_div(F.log_softmax(logits_adv, dim=1), p_clean, reduction="none").sum(dim=1)


def trades_adversary(model: nn.Module, x: torch.Tensor, eps: float, *, norm: Norm, steps: int, stepsize: float, init_std: float,
                     seeds: Sequence[int], bounds: tuple[float, float]) -> torch.Tensor:
    """TRADES inner maximisation: maximise KL(f(x) || f(x')) over the eps ball (label-free).

    Uses the attack engine's projection and steepest-ascent helpers
    (``robustlab.attacks.base.project`` / ``normalize_gradient``); the engine's ``PGD`` maximises a
    label loss, not this KL, hence this short loop. Start: x + init_std * N(0, I), per-sample seeded.

    Shapes: x (N, C, H, W) in bounds -> x_adv (N, C, H, W), detached.

    References: Zhang et al. 2019, Algorithm 1; github.com/yaodongyu/TRADES ``trades_loss``.
    """
    lo, hi = bounds
    x = x.detach()
    with torch.no_grad():
        p_clean = F.softmax(model(x), dim=1)
    noise = per_sample_noise(list(seeds), tuple(x.shape[1:]), device=x.device, dtype=x.dtype)
    xa = (x + init_std * noise).clamp(lo, hi)
    for _ in range(steps):
        xa = xa.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = kl_to_clean(model(xa), p_clean).sum()
        grad = torch.autograd.grad(loss, xa)[0]
        with torch.no_grad():
            xa = xa + stepsize * normalize_gradient(grad, norm)
            xa = (x + project(xa - x, eps, norm)).clamp(lo, hi)
    return xa.detach()


@DEFENSES.register("trades")
class TRADES(DefenseMethod):
    """Minimise CE(f(x), y) + beta * KL(f(x) || f(x')) with x' the KL-maximising point of the eps ball.

    Shapes: x (N, C, H, W) in bounds, y (N,) -> scalar loss (the KL term averaged over the batch,
    ``batchmean`` as in the reference code).

    References: Zhang et al., "Theoretically Principled Trade-off between Robustness and
    Accuracy", ICML 2019; reference code github.com/yaodongyu/TRADES (beta 6, eps 0.031, 10 x 0.007).
    """

    name = "trades"
    description = "TRADES: CE + beta * KL(clean || adversarial) (Zhang et al. 2019)"
    references = "Zhang et al. ICML 2019"
    Params = TRADESParams
    val_metric = ValMetric.PGD
    params: TRADESParams

    def resolve(self, model: nn.Module) -> "TRADES":
        return type(self)(replace(self.params, eps=resolve_eps(model, self.params.eps, Norm.parse(self.params.norm))))

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, seeds: Sequence[int], bounds: tuple[float, float]) -> LossOutput:
        p = self.params
        assert p.eps is not None, "call resolve(model) first"
        with eval_mode(model):
            xa = trades_adversary(model, x, p.eps, norm=Norm.parse(p.norm), steps=p.steps, stepsize=p.rel_stepsize * p.eps,
                                  init_std=p.init_std * (bounds[1] - bounds[0]), seeds=seeds, bounds=bounds)
        logits = model(x)
        logits_adv = model(xa)
        ce = F.cross_entropy(logits, y)
        kl = kl_to_clean(logits_adv, F.softmax(logits, dim=1)).mean()
        return LossOutput(ce + p.beta * kl, logits.detach(), {"ce": float(ce.detach()), "kl": float(kl.detach())})
