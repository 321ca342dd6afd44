"""Fast adversarial training: FGSM with a random start (Wong, Rice & Kolter 2020)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks.base import Norm
from ..attacks.pgd import PGD
from ._budget import resolve_eps
from .base import DEFENSES, DefenseMethod, DefenseParams, LossOutput, ValMetric, attack_all_points, eval_mode, positive


@dataclass(frozen=True)
class FastATParams(DefenseParams):
    """Wong et al.'s defaults: Linf, eps = the data set's standard budget, uniform random start in
    the eps ball, one signed-gradient step of size alpha = 1.25 * eps. The paper pairs it with a
    cyclic learning rate (the trainer's default schedule for this method)."""

    norm: str = field(default="linf", metadata={"help": "Threat model of adversarial training (linf or l2)."})
    eps: float | None = field(default=None, metadata={"help": "Training budget in the model's input units: e.g. 8/255 for inputs in [0, 1], 8 for --bounds 0,255 [default: the data set's standard budget in the model's input scale: CIFAR 8/255, MNIST 0.3, digits 0.1]."})
    alpha_ratio: float = field(default=1.25, metadata={"help": "FGSM step / eps."})

    def validate(self) -> None:
        Norm.parse(self.norm)
        positive("eps", self.eps)
        positive("alpha_ratio", self.alpha_ratio, allow_none=False)


@DEFENSES.register("fast-at")
class FastAdversarialTraining(DefenseMethod):
    """FGSM-RS training: delta ~ U(-eps, eps), one step of alpha = 1.25 eps, project, clip, train on it.

    The step is ``robustlab.attacks.pgd.PGD(steps=1, abs_stepsize=alpha, random_start=True)`` --
    exactly FGSM with a random start -- run on every point of the batch. Watch the per-epoch PGD
    validation: a sudden collapse of robust accuracy is the "catastrophic overfitting" the paper
    describes (the trainer warns, and ``select=best`` keeps the best epoch, as the paper's early
    stopping does).

    Shapes: x (N, C, H, W) in bounds, y (N,) -> scalar loss.

    References: Wong, Rice & Kolter, "Fast is better than free: Revisiting adversarial training",
    ICLR 2020 (reference code: github.com/locuslab/fast_adversarial).
    """

    name = "fast-at"
    default_schedule = "cyclic"  # Wong et al.'s cyclic learning rate
    description = "fast adversarial training, FGSM with random start (Wong et al. 2020)"
    references = "Wong, Rice & Kolter ICLR 2020"
    Params = FastATParams
    val_metric = ValMetric.PGD
    params: FastATParams

    def resolve(self, model: nn.Module) -> "FastAdversarialTraining":
        return type(self)(replace(self.params, eps=resolve_eps(model, self.params.eps, Norm.parse(self.params.norm))))

    def attack(self) -> PGD:
        assert self.params.eps is not None
        return PGD(norm=self.params.norm, steps=1, abs_stepsize=self.params.alpha_ratio * self.params.eps, random_start=True)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, seeds: Sequence[int], bounds: tuple[float, float]) -> LossOutput:
        assert self.params.eps is not None, "call resolve(model) first"
        with eval_mode(model):
            xa = attack_all_points(self.attack(), model, x, y, self.params.eps, seeds=seeds, bounds=bounds)
        logits = model(xa)
        return LossOutput(F.cross_entropy(logits, y), logits.detach(), {})
