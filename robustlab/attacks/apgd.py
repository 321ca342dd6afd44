"""Auto-PGD (APGD-CE, APGD-DLR, APGD-T) with early exit.

The step-size schedule (checkpoints, oscillation test, halving with restart from the best point),
the momentum (alpha = 0.75) and the losses follow Croce & Hein (2020) and the authors' code as
packaged in ``pyautoattack`` (``autopgd_base.py``). Two differences, neither of which changes which
points are found adversarial:

* **Early exit.** A point's result is its first misclassified iterate, and it stops costing work:
  the state drops broken rows down to the next bucket size (a few sizes per octave, so the C heap
  reuses its blocks; the rows kept as filler are never recorded). The reference keeps iterating
  on it (its robust flag can only go from robust to non-robust), so the flags are the same while
  the work shrinks with the number of robust points.
* **Per-sample seeds.** The random start of sample i depends only on ``seeds[i]`` (the reference
  draws one batch from the global RNG), so results do not depend on the batch size.

APGD-T runs all target classes of a point *concurrently* (one stacked batch of n * n_targets
copies; when one copy succeeds all copies of that point leave). The reference runs them one after
another on the points still robust; each copy's trajectory is the same in both, so the set of
points found adversarial is the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..errors import SuiteError
from ..buckets import rows_after_exit
from ..seeding import derive_seed
from .geometry import attack_loss, clip_to_ball, normalize, random_direction
from .threat import Loss, Norm

__all__ = ["APGD", "APGDResult"]


@dataclass(frozen=True)
class APGDResult:
    """x_adv (N, ...): first adversarial iterate, or the clean point when none was found;
    success (N,) bool; iterations (N,) int: gradient steps each point took while unbroken (cost accounting)."""

    x_adv: torch.Tensor
    success: torch.Tensor
    iterations: torch.Tensor


class APGD:
    """Auto-PGD, Linf or L2, untargeted (CE or DLR loss) or targeted (DLR-T loss), with early exit.

    Shapes: ``run(model, x (N, C, H, W) in bounds, y (N,), eps, seeds (N,))`` -> :class:`APGDResult`.

    References: Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of
    diverse parameter-free attacks", ICML 2020; checked against ``pyautoattack`` 0.2.0
    (``APGDAttack``, ``APGDAttack_targeted``) in tests/test_attacks_autoattack.py.
    """

    def __init__(self, *, norm: Norm | str = Norm.LINF, n_iter: int = 100, loss: Loss | str = Loss.CE, rho: float = 0.75, eot_iter: int = 1, n_target_classes: int = 9) -> None:
        self.loss = Loss.parse(loss)
        if self.loss is Loss.MARGIN:
            raise SuiteError("APGD takes loss ce, dlr or dlr-targeted.")
        if n_iter < 1 or eot_iter < 1 or n_target_classes < 1:
            raise SuiteError(f"APGD needs n_iter, eot_iter and n_target_classes >= 1, got {n_iter}, {eot_iter}, {n_target_classes}.")
        self.norm = Norm.parse(norm)
        self.n_iter = int(n_iter)
        self.rho = float(rho)
        self.eot_iter = int(eot_iter)
        self.n_target_classes = int(n_target_classes)

    # ------------------------------------------------------------------------------------
    def run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        eps: float,
        *,
        seeds: Sequence[int],
        bounds: tuple[float, float],
        early_exit: bool = True,
        x_init: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
    ) -> APGDResult:
        """Attack every point of x (callers pass only clean-correct points).

        ``x_init`` (N, ...) replaces the random start and ``targets`` (N,) the automatic choice of
        target classes (one target per point then); both exist to compare against the reference
        step by step.
        """
        n = x.shape[0]
        if self.loss is not Loss.DLR_TARGETED or targets is not None:
            s2 = [derive_seed(int(s), "apgd", self.loss.value) for s in seeds]
            return self._single(model, x, y, targets, torch.arange(n, device=x.device), n, eps, s2, bounds, early_exit, x_init)
        with torch.no_grad():
            order = model(x).sort(dim=1)[1]
        k = min(self.n_target_classes, order.shape[1] - 1)
        xs: list[torch.Tensor] = []
        ys: list[torch.Tensor] = []
        ts: list[torch.Tensor] = []
        groups: list[torch.Tensor] = []
        ss: list[int] = []
        for tc in range(2, k + 2):
            xs.append(x)
            ys.append(y)
            ts.append(order[:, -tc])
            groups.append(torch.arange(n, device=x.device))
            ss.extend(derive_seed(int(s), "apgd-t", tc) for s in seeds)
        return self._single(model, torch.cat(xs), torch.cat(ys), torch.cat(ts), torch.cat(groups), n, eps, ss, bounds, early_exit)

    def _grad(self, model: nn.Module, xa: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        grad = torch.zeros_like(xa)
        xa = xa.detach().requires_grad_(True)
        for _ in range(self.eot_iter):
            with torch.enable_grad():
                logits = model(xa)
                li = attack_loss(logits, y, self.loss, target=t)
            grad += torch.autograd.grad(li.sum(), xa)[0].detach()
        return logits.detach(), li.detach(), grad / float(self.eot_iter)

    def _single(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        tgt: torch.Tensor | None,
        group: torch.Tensor,
        n_out: int,
        eps: float,
        seeds: Sequence[int],
        bounds: tuple[float, float],
        early_exit: bool,
        x_init: torch.Tensor | None = None,
    ) -> APGDResult:
        lo, hi = bounds
        dev = x.device
        out = torch.zeros((n_out, *x.shape[1:]), dtype=x.dtype, device=dev)
        out[group] = x  # clean points unless an adversarial iterate is found
        success = torch.zeros(n_out, dtype=torch.bool, device=dev)
        iters = torch.zeros(n_out, dtype=torch.long, device=dev)
        n_iter = self.n_iter
        n_iter_2 = max(int(0.22 * n_iter), 1)
        n_iter_min = max(int(0.06 * n_iter), 1)
        size_decr = max(int(0.03 * n_iter), 1)

        x_adv = (x_init.clone() if x_init is not None else x + eps * random_direction(seeds, x.shape[1:], self.norm, device=x.device, dtype=x.dtype)).clamp(lo, hi)
        logits, loss, grad = self._grad(model, x_adv, y, tgt)
        state = {
            "x": x, "y": y, "x_adv": x_adv, "x_best": x_adv.clone(), "grad": grad, "grad_best": grad.clone(),
            "loss_best": loss.clone(), "step": torch.full((x.shape[0], *([1] * (x.ndim - 1))), 2.0 * eps, dtype=x.dtype, device=dev),
            "x_old": x_adv.clone(), "loss_steps": torch.zeros((n_iter, x.shape[0]), device=dev), "lb_last": loss.clone(),
            "red_last": torch.ones_like(loss), "group": group,
        }
        if tgt is not None:
            state["t"] = tgt

        def record_and_drop(pred_wrong: torch.Tensor, xa: torch.Tensor) -> None:
            nonlocal state
            if bool(pred_wrong.any()):
                g = state["group"][pred_wrong]
                new = ~success[g]
                out[g[new]] = xa[pred_wrong][new]
                success[g] = True
            if early_exit:
                keep = ~success[state["group"]]
                rows = rows_after_exit(int(keep.sum()), keep.numel())
                if rows < keep.numel():
                    # finished rows fill the state up to a bucket size: their iterates are never
                    # recorded again (``success`` is set), and every tensor keeps one of a few sizes
                    fill = (~keep).nonzero()[:, 0][: rows - int(keep.sum())]
                    keep = keep.clone()
                    keep[fill] = True
                    state = {k: (v[:, keep] if k == "loss_steps" else v[keep]) for k, v in state.items()}

        record_and_drop(logits.argmax(1) != y, x_adv)
        counter3 = 0
        k = n_iter_2
        for i in range(n_iter):
            if state["x"].shape[0] == 0:
                break
            s = state
            with torch.no_grad():
                xa = s["x_adv"]
                grad2 = xa - s["x_old"]
                s["x_old"] = xa.clone()
                a = 0.75 if i > 0 else 1.0
                if self.norm is Norm.LINF:
                    x1 = clip_to_ball(s["x"], xa + s["step"] * torch.sign(s["grad"]), eps, self.norm, bounds)
                else:
                    x1 = clip_to_ball(s["x"], xa + s["step"] * normalize(s["grad"], Norm.L2), eps, self.norm, bounds)
                x1 = clip_to_ball(s["x"], xa + (x1 - xa) * a + grad2 * (1 - a), eps, self.norm, bounds)
            logits, li, grad = self._grad(model, x1, s["y"], s.get("t"))
            s["x_adv"], s["grad"] = x1, grad
            iters[s["group"][~success[s["group"]]]] += 1
            with torch.no_grad():
                s["loss_steps"][i] = li
                imp = li > s["loss_best"]
                s["x_best"][imp] = x1[imp]
                s["grad_best"][imp] = grad[imp]
                s["loss_best"][imp] = li[imp]
                counter3 += 1
                if counter3 == k:
                    ls = s["loss_steps"]
                    t = torch.zeros(ls.shape[1], device=dev)
                    for c5 in range(k):
                        t += (ls[i - c5] > ls[i - c5 - 1]).float()
                    fl_osc = (t <= k * self.rho).float()
                    fl_noimpr = (1.0 - s["red_last"]) * (s["lb_last"] >= s["loss_best"]).float()
                    fl_osc = torch.max(fl_osc, fl_noimpr)
                    s["red_last"] = fl_osc.clone()
                    s["lb_last"] = s["loss_best"].clone()
                    red = fl_osc > 0
                    if bool(red.any()):
                        s["x_adv"] = s["x_adv"].clone()
                        s["step"][red] /= 2.0
                        s["x_adv"][red] = s["x_best"][red]
                        s["grad"][red] = s["grad_best"][red]
                    k = max(k - size_decr, n_iter_min)
                    counter3 = 0
            record_and_drop(logits.argmax(1) != s["y"], x1)
        return APGDResult(out, success, iters)
