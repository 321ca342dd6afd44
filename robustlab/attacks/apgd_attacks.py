"""APGD-CE, APGD-DLR and APGD-T as registered attacks (the engine is :mod:`robustlab.attacks.apgd`).

Shapes: x (N, C, H, W) in bounds, y (N,) -> x_adv (N, C, H, W).
References: Croce & Hein, ICML 2020; ``pyautoattack`` 0.2.0 ``APGDAttack`` / ``APGDAttack_targeted``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence

import torch
from torch import nn

from ..errors import SuiteError
from .apgd import APGD
from .base import ATTACKS, FixedEpsilonAttack
from .threat import Loss, Norm

__all__ = ["APGDCE", "APGDDLR", "APGDT"]


class _APGDAttack(FixedEpsilonAttack):
    loss: ClassVar[Loss]

    def __init__(self, *, norm: Norm | str = Norm.LINF, n_iter: int = 100, eot_iter: int = 1) -> None:
        self.norm = Norm.parse(norm)
        self.engine = APGD(norm=self.norm, n_iter=n_iter, loss=self.loss, eot_iter=eot_iter)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, seeds: Sequence[int], early_stop: bool, targeted: bool, bounds: tuple[float, float]) -> torch.Tensor:
        if targeted:
            raise SuiteError(f"{type(self).__name__} is untargeted here; use pgd with targeted=True for a targeted attack.")
        return self.engine.run(model, x, y, eps, seeds=seeds, bounds=bounds, early_exit=early_stop).x_adv

    def reference(self, aa: Any, xu: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
        """The same attack by pyautoattack's object ``aa.apgd`` (inputs in [0, 1])."""
        aa.apgd.loss = self.loss.value
        aa.apgd.seed = seed
        out: torch.Tensor = aa.apgd.perturb(xu, y)
        return out


@ATTACKS.register("apgd-ce")
class APGDCE(_APGDAttack):
    """APGD on the cross-entropy loss (AutoAttack's first attack)."""

    loss = Loss.CE


@ATTACKS.register("apgd-dlr")
class APGDDLR(_APGDAttack):
    """APGD on the difference-of-logits-ratio loss (AutoAttack ``rand``)."""

    loss = Loss.DLR


@ATTACKS.register("apgd-t")
class APGDT(_APGDAttack):
    """Targeted APGD (DLR-T loss) on the ``n_target_classes`` highest-logit classes, all in one batch."""

    loss = Loss.DLR_TARGETED

    def __init__(self, *, norm: Norm | str = Norm.LINF, n_iter: int = 100, eot_iter: int = 1, n_target_classes: int = 9) -> None:
        super().__init__(norm=norm, n_iter=n_iter, eot_iter=eot_iter)
        self.engine = APGD(norm=self.norm, n_iter=n_iter, loss=self.loss, eot_iter=eot_iter, n_target_classes=n_target_classes)

    def rows_per_point(self) -> int:
        return self.engine.n_target_classes

    def reference(self, aa: Any, xu: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
        aa.apgd_targeted.seed = seed
        out: torch.Tensor = aa.apgd_targeted.perturb(xu, y)
        return out
