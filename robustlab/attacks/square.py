"""Square Attack, Linf, untargeted margin loss: a lean re-implementation of the reference.

The reference (``pyautoattack.square.SquareAttack``) spends most of its time on bookkeeping
around tiny forward passes (5000 iterations). This version keeps only the still-robust points in
compact tensors and draws its random numbers from a CPU ``torch.Generator`` seeded with ``seed``
in exactly the order and shapes the reference draws them from the global RNG, so with the same
seed and points it returns the same flags (tests/test_attacks_autoattack.py checks it). Like the
reference, one square position per iteration is shared by the whole batch, so results depend on
which points are attacked together (the reference's design, kept for fidelity). Candidates that
equal their current best (late iterations change one pixel, often already at the drawn sign) are not
evaluated: their margin is the current one, so the reference's decision is known without a query.
"""

from __future__ import annotations

import math
from typing import Any, Sequence, cast

import torch
from torch import nn

from ..errors import SuiteError
from .base import ATTACKS, FixedEpsilonAttack
from .threat import Norm
from .unit_box import from_unit_box, on_unit_box

__all__ = ["Square", "square_linf", "p_selection"]


@ATTACKS.register("square")
class Square(FixedEpsilonAttack):
    """Square Attack (black-box, untargeted margin loss), Linf with :func:`square_linf`, L2 with the
    reference's ``SquareAttack``. ``seed`` seeds the square positions (shared by the batch, as in the
    reference). Shapes: x (N, C, H, W) in bounds, y (N,) -> x_adv (N, C, H, W).

    References: Andriushchenko et al., ECCV 2020; ``pyautoattack`` 0.2.0 ``SquareAttack``.
    """

    def __init__(self, *, norm: Norm | str = Norm.LINF, n_queries: int = 5000, p_init: float = 0.8, seed: int = 0) -> None:
        if n_queries < 1 or not 0 < p_init <= 1:
            raise SuiteError(f"square: n_queries must be >= 1 and p_init in (0, 1], got {n_queries}, {p_init}.")
        self.norm = Norm.parse(norm)
        self.n_queries = int(n_queries)
        self.p_init = float(p_init)
        self.seed = int(seed)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, seeds: Sequence[int], early_stop: bool, targeted: bool, bounds: tuple[float, float]) -> torch.Tensor:
        if targeted:
            raise SuiteError("square is untargeted here.")
        ref, xu, eps_u = on_unit_box(model, x.contiguous(), eps, bounds)
        if self.norm is Norm.LINF:
            return from_unit_box(square_linf(ref, xu, y, eps_u, n_queries=self.n_queries, p_init=self.p_init, seed=self.seed), bounds)
        from pyautoattack.square import SquareAttack

        sq = SquareAttack(ref, p_init=self.p_init, n_queries=self.n_queries, eps=eps_u, norm="L2", n_restarts=1, seed=self.seed, verbose=False, device=x.device, resc_schedule=False)
        with torch.random.fork_rng(devices=[x.device] if x.device.type == "cuda" else []):
            return from_unit_box(sq.perturb(xu, y).detach(), bounds)

    def reference(self, aa: Any, xu: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
        """pyautoattack's own Square (``aa.square``, inputs in [0, 1])."""
        aa.square.seed = seed
        out: torch.Tensor = aa.square.perturb(xu, y)
        return out


def p_selection(it: int, p_init: float) -> float:
    """Fraction of pixels changed at iteration ``it`` (the reference schedule, no rescaling)."""
    for bound, div in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256)):
        if it <= bound:
            return p_init / div
    return p_init / 512


def _margin(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(x)
    u = torch.arange(x.shape[0], device=x.device)
    zy = logits[u, y].clone()
    logits[u, y] = -float("inf")
    return cast("torch.Tensor", zy - logits.max(dim=-1)[0])


@torch.no_grad()
def square_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, n_queries: int = 5000, p_init: float = 0.8, seed: int = 0) -> torch.Tensor:
    """Square Attack (Linf, untargeted) on inputs in [0, 1].

    Shapes: x (N, C, H, W) in [0, 1], y (N,) -> (N, C, H, W) best points found (adversarial where
    the margin became non-positive).

    References: Andriushchenko et al., "Square Attack: a query-efficient black-box adversarial
    attack via random search", ECCV 2020; ``pyautoattack`` 0.2.0 ``SquareAttack`` (Linf branch,
    ``loss='margin'``, ``resc_schedule=False``), compared flag for flag in the tests.
    """
    g = torch.Generator()
    g.manual_seed(int(seed))
    dev = x.device
    n, c, h, w = x.shape
    n_features = c * h * w

    def rand(shape: list[int]) -> torch.Tensor:
        return torch.rand(shape, generator=g)

    x_best = torch.clamp(x + eps * torch.sign(2 * rand([n, c, 1, w]) - 1).to(dev), 0.0, 1.0)
    margin = _margin(model, x_best, y)
    if bool((margin < 0.0).all()):
        return x_best
    active = (margin > 0.0).nonzero()[:, 0]
    xa, xb, ya, ma = x[active], x_best[active], y[active], margin[active]
    lo_b, hi_b = xa - eps, xa + eps
    for i_iter in range(n_queries):
        p = p_selection(i_iter, p_init)
        s = max(int(round(math.sqrt(p * n_features / c))), 1)
        s = min(s, min(h, w))
        vh = int((0 + (h - s) * rand([1])).long())
        vw = int((0 + (w - s) * rand([1])).long())
        col = (2.0 * eps * torch.sign(2 * rand([c, 1, 1]) - 1)).to(dev)
        x_new = xb.clone()
        x_new[:, :, vh : vh + s, vw : vw + s] += col
        x_new = torch.clamp(torch.min(torch.max(x_new, lo_b), hi_b), 0.0, 1.0)
        # A candidate equal to its current best (the window already had the drawn signs) has the
        # current margin, so it cannot improve: its forward pass is skipped (the reference's outcome).
        moved = (x_new[:, :, vh : vh + s, vw : vw + s] != xb[:, :, vh : vh + s, vw : vw + s]).flatten(1).any(1)
        if bool(moved.all()):
            m_new = _margin(model, x_new, ya)
        else:
            m_new = ma.clone()
            rows = moved.nonzero()[:, 0]
            if rows.numel():
                m_new[rows] = _margin(model, x_new[rows], ya[rows])
        imp = (m_new < ma) | (m_new <= 0.0)
        if bool(imp.any()):
            ma = torch.where(imp, m_new, ma)
            xb = torch.where(imp.view(-1, 1, 1, 1), x_new, xb)
            done = ma <= 0.0
            if bool(done.any()):
                x_best[active[done]] = xb[done]
                keep = ~done
                active, xa, xb, ya, ma, lo_b, hi_b = active[keep], xa[keep], xb[keep], ya[keep], ma[keep], lo_b[keep], hi_b[keep]
                if active.numel() == 0:
                    break
    x_best[active] = xb
    return x_best
