"""Attacks whose figures are decided by the fp32 model, whatever view ran the iterations.

With ``--precision bf16`` the attack iterations run on a bf16 autocast view of the model
(:class:`robustlab.fastpaths.AutocastView`). The published figure must still be the fp32 model's:

1. clean correctness is decided by the fp32 model (a point that only the bf16 view misclassifies
   is attacked, not skipped as a clean error);
2. every returned example is re-checked on the fp32 model (:func:`~robustlab.attacks.recheck.recheck`);
3. an example the view finds adversarial but the fp32 model classifies correctly (a *flip*: early
   exit returns exactly such boundary points) is counted, and the same attack runs again on that
   point with the fp32 model, so the lower precision never leaves a point robust that the fp32
   attack would break.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from .base import FixedEpsilonAttack
from .geometry import is_adversarial
from .recheck import Recheck, finite_logits, recheck


@dataclass(frozen=True)
class VerifiedOutcome:
    """Per-sample outcome (CPU tensors, (N,)) of :func:`verified_perturb`.

    Attributes:
        x_adv: (N, C, H, W) returned examples (the clean point for clean errors).
        correct: fp32 clean correctness.
        check: the fp32 re-check of ``x_adv``.
        claimed: candidates some model (view or fp32) classified as adversarial, among correct points.
        rejected: fp32-misclassified candidates that failed the re-check (ball, bounds, finite).
        flipped: candidates the view found adversarial that the fp32 model classifies correctly.
    """

    x_adv: torch.Tensor
    correct: torch.Tensor
    check: Recheck
    claimed: int
    rejected: int
    flipped: int


def verified_perturb(
    attack: FixedEpsilonAttack,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    seeds: Sequence[int],
    bounds: tuple[float, float],
    attack_model: nn.Module | None = None,
    early_stop: bool = True,
) -> VerifiedOutcome:
    """Run ``attack`` on the fp32-correct points of ``x`` (N, C, H, W) with ``attack_model`` (default
    ``model``) and verify every result on ``model``; flips are re-attacked with ``model``."""
    view = attack_model if attack_model is not None and attack_model is not model else None
    y = y.to(x.device)
    with torch.no_grad():
        correct = finite_logits(model(x), "clean inputs").argmax(1).eq(y)
    xa = x.clone()
    idx = correct.nonzero()[:, 0]
    if idx.numel():
        sub = [seeds[int(i)] for i in idx]
        xa[idx] = attack.perturb(view if view is not None else model, x[idx], y[idx], eps, seeds=sub, early_stop=early_stop, bounds=bounds, include_clean_errors=True)
    rc = recheck(model, x, xa, y, eps, attack.norm, bounds)
    cc = correct.cpu()
    claimed_mask = cc & rc.misclassified
    flipped = 0
    if view is not None and idx.numel():
        with torch.no_grad():
            flip = cc & is_adversarial(view(xa), y, targeted=False).cpu() & ~rc.misclassified
        claimed_mask = claimed_mask | flip
        flipped = int(flip.sum())
        if flipped:
            fi = flip.nonzero()[:, 0].to(x.device)
            xa[fi] = attack.perturb(model, x[fi], y[fi], eps, seeds=[seeds[int(i)] for i in fi], early_stop=early_stop, bounds=bounds, include_clean_errors=True)
            rc2 = recheck(model, x[fi], xa[fi], y[fi], eps, attack.norm, bounds)
            rc = _splice(rc, fi.cpu(), rc2)
    rejected = int((cc & rc.misclassified & ~rc.valid).sum())
    return VerifiedOutcome(xa, cc, rc, int(claimed_mask.sum()), rejected, flipped)


def _splice(rc: Recheck, idx: torch.Tensor, part: Recheck) -> Recheck:
    """``rc`` with the entries at ``idx`` replaced by ``part``."""
    out = []
    for name in ("finite", "in_ball", "in_bounds", "misclassified", "norms"):
        t = getattr(rc, name).clone()
        t[idx] = getattr(part, name)
        out.append(t)
    return Recheck(*out)
