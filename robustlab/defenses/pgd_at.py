"""PGD adversarial training (Madry et al. 2018)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks.base import Norm
from ..attacks.pgd import PGD
from ..errors import SuiteError
from ._budget import resolve_eps
from .base import DEFENSES, DefenseMethod, DefenseParams, LossOutput, ValMetric, attack_all_points, eval_mode, positive


@dataclass(frozen=True)
class PGDATParams(DefenseParams):
    """Madry et al.'s defaults: Linf, eps = the data set's standard budget (CIFAR 8/255),
    step 2/255 = eps / 4, 10 steps, random start. ``eps=None`` resolves from the model's data set."""

    norm: str = field(default="linf", metadata={"help": "Threat model of adversarial training (linf or l2)."})
    eps: float | None = field(default=None, metadata={"help": "Training budget in the model's input units: e.g. 8/255 for inputs in [0, 1], 8 for --bounds 0,255 [default: the data set's standard budget in the model's input scale: CIFAR 8/255, MNIST 0.3, digits 0.1]."})
    steps: int = field(default=10, metadata={"help": "Attack steps per batch."})
    rel_stepsize: float = field(default=0.25, metadata={"cli": "step-ratio", "help": "Attack step / eps."})
    random_start: bool = field(default=True, metadata={"help": "Start the attack at a uniform random point of the eps ball."})

    def validate(self) -> None:
        Norm.parse(self.norm)
        positive("eps", self.eps)
        positive("rel_stepsize", self.rel_stepsize, allow_none=False)
        if self.steps < 1:
            raise SuiteError(f"steps must be at least 1 for PGD training, got {self.steps}.")


@DEFENSES.register("pgd-at")
class PGDAdversarialTraining(DefenseMethod):
    """Minimise the cross-entropy on PGD adversarial examples: min_theta E max_{||d|| <= eps} CE(f(x + d), y).

    The inner maximisation is ``robustlab.attacks.pgd.PGD`` (no copy), run on every point of the
    batch without early stopping, with batch-norm statistics frozen.

    Shapes: x (N, C, H, W) in bounds, y (N,) -> scalar loss.

    References: Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks",
    ICLR 2018 (CIFAR-10: Linf 8/255, step 2/255, 7-10 steps); checked against the step rule of
    foolbox 3.3.4 ``LinfPGD`` through robustlab's PGD tests.
    """

    name = "pgd-at"
    description = "PGD adversarial training (Madry et al. 2018)"
    references = "Madry et al. ICLR 2018"
    Params = PGDATParams
    val_metric = ValMetric.PGD
    params: PGDATParams

    def resolve(self, model: nn.Module) -> "PGDAdversarialTraining":
        return type(self)(replace(self.params, eps=resolve_eps(model, self.params.eps, Norm.parse(self.params.norm))))

    def attack(self) -> PGD:
        return PGD(norm=self.params.norm, steps=self.params.steps, rel_stepsize=self.params.rel_stepsize, random_start=self.params.random_start)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, seeds: Sequence[int], bounds: tuple[float, float]) -> LossOutput:
        assert self.params.eps is not None, "call resolve(model) first"
        with eval_mode(model):
            xa = attack_all_points(self.attack(), model, x, y, self.params.eps, seeds=seeds, bounds=bounds)
        logits = model(xa)
        loss = F.cross_entropy(logits, y)
        return LossOutput(loss, logits.detach(), {})
