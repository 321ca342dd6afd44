"""Minimal-norm attacks through foolbox: FMN (Linf, L2), Carlini-Wagner L2, DeepFool (Linf, L2).

A minimal-norm attack returns, per point, the smallest perturbation it found that changes the
prediction. One run therefore gives the whole robust-accuracy-versus-epsilon curve: a point is
robust at eps when it is correct and its minimal perturbation is larger than eps.
"""

from __future__ import annotations

import enum
import math
from typing import Any

import torch
from torch import nn

from ..errors import SuiteError
from .base import Norm
from .scoring import recheck

__all__ = ["MinNormAttack", "minimal_perturbation"]


class MinNormAttack(str, enum.Enum):
    FMN = "fmn"
    CW_L2 = "cw_l2"
    DEEPFOOL = "deepfool"


def _foolbox_attack(kind: MinNormAttack, norm: Norm, steps: int, binary_search_steps: int) -> Any:
    import foolbox as fb

    if kind is MinNormAttack.FMN:
        return fb.attacks.LInfFMNAttack(steps=steps) if norm is Norm.LINF else fb.attacks.L2FMNAttack(steps=steps)
    if kind is MinNormAttack.CW_L2:
        if norm is not Norm.L2:
            raise SuiteError("cw_l2 is an L2 attack; set norm: l2 or use attack: fmn for Linf.")
        return fb.attacks.L2CarliniWagnerAttack(binary_search_steps=binary_search_steps, steps=steps, stepsize=0.01, confidence=0.0, initial_const=0.001)
    return fb.attacks.LinfDeepFoolAttack(steps=steps) if norm is Norm.LINF else fb.attacks.L2DeepFoolAttack(steps=steps)


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
    """Per-point minimal adversarial perturbation norms.

    Shapes: x (N, C, H, W) in bounds, y (N,) -> (x_adv (N, C, H, W), min_norm (N,) float) with
    min_norm = 0 for clean errors and +inf where the attack found nothing (re-checked by robustlab).

    References: Pintor et al., "Fast Minimum-norm Adversarial Attacks through Adaptive Norm
    Constraints", NeurIPS 2021; Carlini & Wagner, S&P 2017; Moosavi-Dezfooli et al., CVPR 2016;
    implementations from foolbox 3.3.4.
    """
    import foolbox as fb

    kind = MinNormAttack(attack)
    norm = Norm.parse(norm)
    fa = _foolbox_attack(kind, norm, steps, binary_search_steps)
    fmodel = fb.PyTorchModel(model, bounds=bounds, device=x.device)
    with torch.no_grad():
        correct = model(x).argmax(1).eq(y)
    x_adv = x.clone()
    if bool(correct.any()):
        xc, yc = x[correct], y[correct]
        _, clipped, _ = fa(fmodel, xc, yc, epsilons=None)
        x_adv[correct] = clipped.detach().to(x.dtype)
    rc = recheck(model, x, x_adv, y, math.inf, norm, bounds)
    dev_norms = rc.norms.clone()
    found = rc.valid & correct.cpu()
    out = torch.where(found, dev_norms, torch.full_like(dev_norms, math.inf))
    out[~correct.cpu()] = 0.0
    return x_adv, out
