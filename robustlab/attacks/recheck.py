"""robustlab's own verification of attack outputs: every returned example is re-checked here.

Shapes: x, x_adv (N, C, H, W), y (N,) -> :class:`Recheck` of (N,) CPU tensors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ModelOutputError
from .geometry import norms
from .threat import Norm

__all__ = ["Recheck", "recheck", "finite_logits"]


def finite_logits(logits: torch.Tensor, what: str) -> torch.Tensor:
    """``logits`` unchanged, or :class:`ModelOutputError` naming ``what`` when a row is not finite.

    argmax of a NaN row is an arbitrary class: a clean point would count as misclassified (and so as
    not robust) and an adversarial one as a success, so a verdict on such a row is refused instead.
    """
    bad = ~torch.isfinite(logits).all(1)
    if bool(bad.any()):
        raise ModelOutputError(
            f"the model produced NaN or infinite logits for {int(bad.sum())} of {logits.shape[0]} {what}, so its prediction there is undefined; "
            "make the model's outputs finite for every input in bounds (e.g. guard divisions, logs and exponentials)."
        )
    return logits


@dataclass(frozen=True)
class Recheck:
    """Per-sample re-check of returned adversarial examples (all (N,) tensors, CPU)."""

    finite: torch.Tensor
    in_ball: torch.Tensor
    in_bounds: torch.Tensor
    misclassified: torch.Tensor
    norms: torch.Tensor

    @property
    def valid(self) -> torch.Tensor:
        return self.finite & self.in_ball & self.in_bounds & self.misclassified


@torch.no_grad()
def recheck(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor, eps: float, norm: Norm, bounds: tuple[float, float]) -> Recheck:
    """Finite, ||x_adv - x|| <= eps (relative tolerance 1e-5 for Linf, 1e-4 for L2, for float32
    round-off), inside bounds (1e-6), f(x_adv) != y.

    Raises :class:`ModelOutputError` when the model's logits at a returned example are not finite."""
    lo, hi = bounds
    fin = torch.isfinite(x_adv).flatten(1).all(1)
    xa = torch.where(torch.isfinite(x_adv), x_adv, x)
    nr = norms((xa - x).float(), norm)
    tol = 1e-5 if norm is Norm.LINF else 1e-4
    in_ball = nr <= eps * (1 + tol) + 1e-7
    in_b = ((xa >= lo - 1e-6) & (xa <= hi + 1e-6)).flatten(1).all(1)
    pred = finite_logits(model(xa), f"adversarial examples inside the threat model ({norm.value}, eps {eps:g})").argmax(1)
    mis = pred.ne(y.to(pred.device))
    return Recheck(fin.cpu(), in_ball.cpu(), in_b.cpu(), mis.cpu(), nr.cpu())
