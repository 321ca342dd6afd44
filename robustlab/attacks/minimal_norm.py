"""Minimal-norm attacks through foolbox: FMN (Linf, L2), Carlini-Wagner L2, DeepFool (Linf, L2).

A minimal-norm attack returns, per point, the smallest perturbation it found that changes the
prediction. One run therefore gives the whole robust-accuracy-versus-epsilon curve: a point is
robust at eps when it is correct and its minimal perturbation is larger than eps. Each is a
registered :class:`~robustlab.attacks.base.MinimizationAttack`; the base re-checks every example.

Shapes: x (N, C, H, W) in bounds, y (N,) -> minimal examples (N, C, H, W).
References: Pintor et al., "Fast Minimum-norm Adversarial Attacks through Adaptive Norm
Constraints", NeurIPS 2021; Carlini & Wagner, S&P 2017; Moosavi-Dezfooli et al., CVPR 2016;
implementations from foolbox 3.3.4.
"""

from __future__ import annotations

import enum
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import SuiteError
from .base import ATTACKS, MinimizationAttack
from .threat import Norm
from .unit_box import from_unit_box, on_unit_box

__all__ = ["MinNormAttack", "FMN", "CarliniWagnerL2", "DeepFool", "minimal_perturbation"]


class MinNormAttack(str, enum.Enum):
    FMN = "fmn"
    CW_L2 = "cw_l2"
    DEEPFOOL = "deepfool"


class _FoolboxMinimal(MinimizationAttack):
    def __init__(self, *, norm: Norm | str = Norm.L2, steps: int = 100) -> None:
        self.norm = Norm.parse(norm)
        if self.norm not in self.norms_supported:
            raise SuiteError(f"{type(self).__name__} supports {', '.join(n.value for n in self.norms_supported)}, not {self.norm.value}.")
        if steps < 1:
            raise SuiteError(f"steps must be at least 1, got {steps}.")
        self.steps = int(steps)

    def foolbox_attack(self) -> Any:  # pragma: no cover - each subclass
        raise NotImplementedError

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, seeds: Sequence[int], bounds: tuple[float, float]) -> torch.Tensor:
        import gc

        import foolbox as fb

        # foolbox's step sizes (FMN's, CW's stepsize) are absolute and tuned for [0, 1]: the model is
        # presented on [0, 1] and the examples mapped back, so the search does not depend on the
        # input scale (on 0..255 it barely moved before). The identity for bounds (0, 1).
        ref, xu, _ = on_unit_box(model, x, 0.0, bounds)
        fmodel = fb.PyTorchModel(ref, bounds=(0.0, 1.0), device=x.device)
        _, clipped, _ = self.foolbox_attack()(fmodel, xu, y, epsilons=None)
        out: torch.Tensor = from_unit_box(clipped.detach(), bounds)
        del fmodel, clipped
        # foolbox's attacks leave reference cycles (closures and frames holding the batch's inputs,
        # logits and gradients) that only a full collection frees; in a run with 200k+ live objects
        # that collection is rare, so each batch's tensors stayed resident (about 0.1 MB per CIFAR
        # image, issue 21). Free them now, once per batch (tens of ms).
        gc.collect()
        return out


@ATTACKS.register("fmn")
class FMN(_FoolboxMinimal):
    """Fast minimum-norm attack (Linf, L2), foolbox's ``LInfFMNAttack`` / ``L2FMNAttack``."""

    def foolbox_attack(self) -> Any:
        import foolbox as fb

        return fb.attacks.LInfFMNAttack(steps=self.steps) if self.norm is Norm.LINF else fb.attacks.L2FMNAttack(steps=self.steps)


@ATTACKS.register("cw_l2")
class CarliniWagnerL2(_FoolboxMinimal):
    """Carlini-Wagner L2 with binary search over the constant, foolbox's ``L2CarliniWagnerAttack``."""

    norms_supported = (Norm.L2,)

    def __init__(self, *, norm: Norm | str = Norm.L2, steps: int = 100, binary_search_steps: int = 9) -> None:
        super().__init__(norm=norm, steps=steps)
        if binary_search_steps < 1:
            raise SuiteError(f"binary_search_steps must be at least 1, got {binary_search_steps}.")
        self.binary_search_steps = int(binary_search_steps)

    def foolbox_attack(self) -> Any:
        import foolbox as fb

        return fb.attacks.L2CarliniWagnerAttack(binary_search_steps=self.binary_search_steps, steps=self.steps, stepsize=0.01, confidence=0.0, initial_const=0.001)


@ATTACKS.register("deepfool")
class DeepFool(_FoolboxMinimal):
    """DeepFool (Linf, L2), foolbox's ``LinfDeepFoolAttack`` / ``L2DeepFoolAttack``."""

    def foolbox_attack(self) -> Any:
        import foolbox as fb

        return fb.attacks.LinfDeepFoolAttack(steps=self.steps) if self.norm is Norm.LINF else fb.attacks.L2DeepFoolAttack(steps=self.steps)


def minimal_perturbation(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    attack: MinNormAttack | str = MinNormAttack.FMN,
    norm: Norm | str = Norm.L2,
    steps: int = 100,
    binary_search_steps: int = 9,
    bounds: tuple[float, float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_adv (N, C, H, W), min_norm (N,)) of the registered attack ``attack``; min_norm is 0 for
    clean errors and +inf where the attack found nothing (re-checked by the base class)."""
    kind = MinNormAttack(attack)
    cls = ATTACKS.get(kind.value)
    kw: dict[str, Any] = {"norm": norm, "steps": steps}
    if "binary_search_steps" in cls.hyperparameters():
        kw["binary_search_steps"] = binary_search_steps
    a = cls(**kw)
    if not isinstance(a, MinimizationAttack):  # pragma: no cover - the three names are minimal-norm attacks
        raise SuiteError(f"{kind.value} is not a minimal-norm attack")
    r = a(model, x, y, bounds=bounds)
    return r.x_adv, r.min_norm
