"""MALT: APGD-T on the target classes that a linear model of the network says are closest.

AutoAttack's APGD-T attacks the 9 classes with the highest logits. MALT (Mesoscopic Almost
Linearity Targeting) ranks candidate targets c by the distance to the decision boundary between y
and c of the network's first-order model at x,

    d_c(x) = (z_y(x) - z_c(x)) / || grad_x z_y(x) - grad_x z_c(x) ||_*,

(dual norm: L1 for Linf, L2 for L2) and runs targeted APGD (DLR-T loss) on the ``n_targets`` classes
with the smallest d_c, after an optional APGD-CE pass. All targets of a point run in one batch with
early exit (robustlab's APGD): a point leaves as soon as one copy is misclassified.

Configuration is robustlab's reading of the paper: candidates = the ``candidates`` classes with the
highest logits (all when K <= candidates + 1), ``n_targets`` = 5, 100 iterations, APGD-CE first. It is
an *additional* attack: it never replaces AutoAttack in a check, and bench/attacks.py measures how
many points AutoAttack breaks that MALT misses.

Shapes: x (N, C, H, W) in bounds, y (N,) -> x_adv (N, C, H, W).
References: Melamed, Yehudai & Shamir, "MALT Powers Up Adversarial Attacks", NeurIPS 2024; Croce &
Hein, ICML 2020 (APGD, DLR-T loss; ``pyautoattack`` 0.2.0).
"""

from __future__ import annotations

from typing import Sequence, cast

import torch
from torch import nn

from ..errors import SuiteError
from ..seeding import derive_seed
from .apgd import APGD
from .base import ATTACKS, FixedEpsilonAttack
from .threat import Loss, Norm

__all__ = ["MALT", "malt_targets"]


def malt_targets(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, norm: Norm, n_targets: int, candidates: int) -> torch.Tensor:
    """(N, k) target classes of each point, the closest first by the linearised boundary distance.

    One backward pass per candidate rank; k = min(n_targets, number of candidates).
    """
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(xg)
        k_cls = logits.shape[1]
        u = torch.arange(x.shape[0], device=x.device)
        masked = logits.detach().clone()
        masked[u, y] = -float("inf")
        m = min(candidates, k_cls - 1)
        cand = masked.topk(m, dim=1).indices  # (N, m), y excluded
        zy = logits[u, y]
        scores = torch.empty(cand.shape, dtype=logits.dtype, device=x.device)
        dual = 1.0 if norm is Norm.LINF else 2.0
        for j in range(m):
            diff = zy - logits[u, cand[:, j]]
            g = torch.autograd.grad(diff.sum(), xg, retain_graph=j < m - 1)[0]
            scores[:, j] = diff.detach() / (g.flatten(1).norm(p=dual, dim=1) + 1e-12)
    order = scores.argsort(dim=1)[:, : min(n_targets, m)]
    return cast("torch.Tensor", cand.gather(1, order))


@ATTACKS.register("malt")
class MALT(FixedEpsilonAttack):
    """MALT targeting + targeted APGD (DLR-T), Linf or L2 (see the module docstring).

    Args:
        norm: threat model. n_iter: APGD iterations per target. n_targets: targets per point.
        candidates: classes (highest logits, y excluded) whose boundary distance is computed.
        apgd_ce: run untargeted APGD-CE first (points it breaks skip the targeting).
    """

    def __init__(self, *, norm: Norm | str = Norm.LINF, n_iter: int = 100, n_targets: int = 5, candidates: int = 100, apgd_ce: bool = True) -> None:
        if n_iter < 1 or n_targets < 1 or candidates < 1:
            raise SuiteError(f"malt: n_iter, n_targets and candidates must be at least 1 (got {n_iter}, {n_targets}, {candidates}).")
        self.norm = Norm.parse(norm)
        self.n_iter = int(n_iter)
        self.n_targets = int(n_targets)
        self.candidates = int(candidates)
        self.apgd_ce = bool(apgd_ce)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, seeds: Sequence[int], early_stop: bool,
             targeted: bool, bounds: tuple[float, float]) -> torch.Tensor:
        if targeted:
            raise SuiteError("malt is an untargeted attack; use pgd with targeted=True for targeted attacks.")
        out = x.clone()
        todo = torch.arange(x.shape[0], device=x.device)
        if self.apgd_ce:
            r = APGD(norm=self.norm, n_iter=self.n_iter, loss=Loss.CE).run(model, x, y, eps, seeds=[derive_seed(int(s), "malt", "ce") for s in seeds], bounds=bounds)
            out[r.success] = r.x_adv[r.success]
            todo = (~r.success).nonzero()[:, 0]
        if todo.numel() == 0:
            return out
        xt, yt = x[todo], y[todo]
        with torch.no_grad():
            k_cls = int(model(xt[:1]).shape[1])
        if k_cls < 4:  # the DLR-T loss needs four classes; fall back to the untargeted DLR loss
            r = APGD(norm=self.norm, n_iter=self.n_iter, loss=Loss.DLR).run(model, xt, yt, eps, seeds=[derive_seed(int(seeds[i]), "malt", "dlr") for i in todo.tolist()], bounds=bounds)
            out[todo[r.success]] = r.x_adv[r.success]
            return out
        tgt = malt_targets(model, xt, yt, norm=self.norm, n_targets=self.n_targets, candidates=self.candidates)
        n, k = tgt.shape
        ids = todo.tolist()
        copy_seeds = [derive_seed(int(seeds[i]), "malt", rank) for rank in range(k) for i in ids]
        apgd = APGD(norm=self.norm, n_iter=self.n_iter, loss=Loss.DLR_TARGETED)
        # all targets of a point in one stacked batch; a point leaves when any of its copies succeeds
        group = torch.arange(n, device=x.device).repeat(k)
        r = apgd._single(model, xt.repeat(k, *([1] * (x.ndim - 1))), yt.repeat(k), tgt.t().reshape(-1), group, n, eps, copy_seeds, bounds, early_stop)
        out[todo[r.success]] = r.x_adv[r.success]
        return out
