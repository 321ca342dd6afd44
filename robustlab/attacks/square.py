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
The squares do not depend on which candidates were accepted, so a point's candidates of the next few
iterations are evaluated in one forward pass (look-ahead, :func:`square_linf`): on the few points that
survive the other attacks, one pass of many rows replaces many passes of a few rows, with the same
result. Late candidates change a few pixels, so on a CPU their logits are recomputed only where the change
reaches (:mod:`robustlab.attacks.local_forward`), again with the same result.
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import SuiteError
from .base import ATTACKS, FixedEpsilonAttack
from .square_local import LocalMargins, margins_of
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

    def __init__(self, *, norm: Norm | str = Norm.LINF, n_queries: int = 5000, p_init: float = 0.8, seed: int = 0, max_rows: int = 128) -> None:
        if n_queries < 1 or not 0 < p_init <= 1:
            raise SuiteError(f"square: n_queries must be >= 1 and p_init in (0, 1], got {n_queries}, {p_init}.")
        if max_rows < 1:
            raise SuiteError(f"square: max_rows must be >= 1, got {max_rows}.")
        self.max_rows = int(max_rows)
        self.norm = Norm.parse(norm)
        self.n_queries = int(n_queries)
        self.p_init = float(p_init)
        self.seed = int(seed)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, seeds: Sequence[int], early_stop: bool, targeted: bool, bounds: tuple[float, float]) -> torch.Tensor:
        if targeted:
            raise SuiteError("square is untargeted here.")
        ref, xu, eps_u = on_unit_box(model, x.contiguous(), eps, bounds)
        if self.norm is Norm.LINF:
            return from_unit_box(square_linf(ref, xu, y, eps_u, n_queries=self.n_queries, p_init=self.p_init, seed=self.seed, max_rows=self.max_rows), bounds)
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
    return margins_of(model(x), y)


class _Draws:
    """The reference's per-iteration draws (square size, position, signs), shared by every point and
    drawn from ``g`` in the reference's order and shapes, as far as they have been needed."""

    def __init__(self, g: torch.Generator, c: int, h: int, w: int, eps: float, p_init: float, n_queries: int, dev: torch.device) -> None:
        self.g, self.c, self.h, self.w, self.eps, self.p_init = g, c, h, w, eps, p_init
        self.size = torch.zeros(n_queries, dtype=torch.long)
        self.top = torch.zeros(n_queries, dtype=torch.long)
        self.left = torch.zeros(n_queries, dtype=torch.long)
        self.col = torch.zeros(n_queries, c)
        self.drawn = 0
        self.dev = dev
        self._on_dev: tuple[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def upto(self, last: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(size, top, left, col) of iterations 0..last at least, on the attack's device."""
        c, h, w = self.c, self.h, self.w
        n_features = c * h * w
        if last >= self.drawn:  # draw ahead in blocks, so the device copy below is rare
            last = min(self.size.numel() - 1, max(last, self.drawn + 255))
        for i in range(self.drawn, last + 1):
            p = p_selection(i, self.p_init)
            s = min(max(int(round(math.sqrt(p * n_features / c))), 1), min(h, w))
            self.size[i] = s
            self.top[i] = int((0 + (h - s) * torch.rand([1], generator=self.g)).long())
            self.left[i] = int((0 + (w - s) * torch.rand([1], generator=self.g)).long())
            self.col[i] = (2.0 * self.eps * torch.sign(2 * torch.rand([c, 1, 1], generator=self.g) - 1)).view(c)
        self.drawn = max(self.drawn, last + 1)
        if self._on_dev is None or self._on_dev[0] < self.drawn:
            self._on_dev = (self.drawn, self.size.to(self.dev), self.top.to(self.dev), self.left.to(self.dev), self.col.to(self.dev))
        return self._on_dev[1:]


class _Depth:
    """How many iterations ahead each point's candidates are evaluated in one forward pass (1, 2, 4, ...).

    Only the speed depends on it (ties are settled canonically, see :func:`square_linf`), so it is
    chosen by measured speed: it keeps the depth with the fewest seconds per iteration advanced, trying
    a neighbouring depth every ``PROBE_EVERY`` steps, within the row budget (``max_rows // active
    points``). Deeper pays where a forward pass of a few rows costs about as much as one of many (small
    models, GPUs, a CPU at tiny batches) and where few candidates are accepted (robust points, late in
    the schedule); early iterations accept often and stay shallow.
    """

    PROBE_EVERY = 8

    def __init__(self, max_rows: int) -> None:
        self.max_rows = max(1, int(max_rows))
        self.level = 0
        self.cost: dict[int, float] = {}
        self.step = 0
        self.up = True

    def choose(self, n_active: int) -> int:
        """The level (depth ``2**level``) of the next step."""
        top = max(0, int(math.log2(max(1, self.max_rows // max(1, n_active)))))
        self.level = min(self.level, top)
        self.step += 1
        if self.step % self.PROBE_EVERY:
            return self.level
        for _ in range(2):
            cand = self.level + (1 if self.up else -1)
            self.up = not self.up
            if 0 <= cand <= top:
                return cand
        return self.level

    def record(self, level: int, seconds: float, advanced: int) -> None:
        c = seconds / max(1, advanced)
        old = self.cost.get(level)
        self.cost[level] = c if old is None else 0.7 * old + 0.3 * c
        if level != self.level and self.cost[level] < self.cost.get(self.level, math.inf):
            self.level = level


def _margin_alone(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Margins with every row in a forward pass of its own: the canonical value, whatever batch the row
    was first evaluated in."""
    return torch.cat([_margin(model, x[i : i + 1], y[i : i + 1]) for i in range(x.shape[0])]) if x.shape[0] else x.new_zeros(0)


#: Relative width of a margin tie before the rounding has been measured: batch-dependent rounding moves a
#: float32 logit by about 1e-6 of its size on CPUs (3e-6 seen on a CIFAR ResNet-18), far inside it.
TIE = 1e-4


class _TieWidth:
    """The relative width of a margin tie, calibrated on the rounding the run itself measures.

    Every tie from a forward pass of more than one row gives one measurement for free: the same
    candidate's margin in that pass and alone, ``|m_batch - m_alone| / (1 + |best margin|)``. The width
    is ``SAFETY`` times the largest measurement, never below ``FLOOR``; it starts at ``TIE`` and narrows
    only after ``WARMUP`` measurements, but widens (up to ``CAP``) as soon as one asks for it. A decision
    is the alone one whenever the width exceeds the rounding of that candidate, so the width only
    decides how many decisions are re-evaluated, never their outcome; with a width 16x the largest of at
    least 64 measured roundings, the remaining assumption is that no candidate rounds 16x worse than
    every one measured."""

    SAFETY = 16.0
    WARMUP = 64
    FLOOR = 1e-5
    CAP = 1e-3

    def __init__(self, fixed: float | None = None) -> None:
        self.width = TIE if fixed is None else float(fixed)
        self.fixed = fixed is not None
        self.seen = 0
        self.largest = 0.0

    def observe(self, rounding: torch.Tensor) -> None:
        """Record relative roundings (batch against alone) of candidates from multi-row passes."""
        if self.fixed or not rounding.numel():
            return
        self.seen += int(rounding.numel())
        self.largest = max(self.largest, float(rounding.max()))
        want = min(self.CAP, max(self.FLOOR, self.SAFETY * self.largest))
        self.width = want if self.seen >= self.WARMUP else max(self.width, want)


@torch.no_grad()
def square_linf(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, n_queries: int = 5000, p_init: float = 0.8, seed: int = 0,
                max_rows: int = 128, depth: int | None = None, tie_width: float | None = None, local_eval: bool = True) -> torch.Tensor:
    """Square Attack (Linf, untargeted) on inputs in [0, 1].

    Shapes: x (N, C, H, W) in [0, 1], y (N,) -> (N, C, H, W) best points found (adversarial where
    the margin became non-positive).

    Each point follows the reference's sequence exactly: at iteration i its candidate is its current
    best plus the i-th shared square, kept when the margin drops (or reaches 0). Because the squares do
    not depend on the outcomes, the candidates of the next ``d`` iterations of a point can be
    evaluated in one forward pass as if all were rejected; the first accepted one is kept and the
    point continues from the iteration after it (the later candidates were built from a stale best and
    are discarded). Points advance at their own pace, up to ``max_rows`` rows per forward pass; the
    depth ``d`` is chosen by measured speed (:class:`_Depth`; ``depth`` fixes it).

    The result does not depend on ``d``, ``max_rows`` or the timings. On CPUs a convolution's last bits
    depend on the batch size (not on a row's position in the batch), so the same candidate's margin can
    differ by about 1e-6 of its size between forward passes of different sizes. A decision whose margins
    are that close (within the tie width of the best's margin, or of 0) is taken on margins computed with
    the row alone, the same numbers whatever the batch; every other decision is far from the rounding.
    The tie width starts at ``TIE`` and follows 16x the largest rounding the run measures on its own
    ties (:class:`_TieWidth`, at least 1e-5 of the margin's size); ``tie_width`` fixes it instead.
    The reference compares margins from its own batches, so a tie can still resolve differently there,
    as it could before. The start (one random stripe pattern per point, drawn for the whole batch as
    the reference does) depends on the points given together.

    On a CPU, once the squares cover at most 1/16 of the image, candidates of a network ``torch.fx`` traces
    are evaluated from cached maps of their point's best, recomputing each convolution only where the square
    reaches (:mod:`robustlab.attacks.local_forward`; 0.3-0.6x the cost per row of an ImageNet ResNet, less on
    CIFAR sizes where the last stages see the whole change). Its rounding is measured against the model's own
    pass every 32nd local step and feeds the tie width, so the result stays the same; ``local_eval=False``
    evaluates every candidate with the model.

    References: Andriushchenko et al., "Square Attack: a query-efficient black-box adversarial
    attack via random search", ECCV 2020; ``pyautoattack`` 0.2.0 ``SquareAttack`` (Linf branch,
    ``loss='margin'``, ``resc_schedule=False``), compared flag for flag in the tests.
    """
    g = torch.Generator()
    g.manual_seed(int(seed))
    dev = x.device
    n, c, h, w = x.shape

    x_best = torch.clamp(x + eps * torch.sign(2 * torch.rand([n, c, 1, w], generator=g) - 1).to(dev), 0.0, 1.0)
    margin = _margin(model, x_best, y)
    if bool((margin < 0.0).all()):
        return x_best
    active = (margin > 0.0).nonzero()[:, 0]
    xa, xb, ya, ma = x[active], x_best[active], y[active], margin[active]
    lo_b, hi_b = xa - eps, xa + eps
    it = torch.zeros(active.numel(), dtype=torch.long, device=dev)  # each point's next iteration
    draws = _Draws(g, c, h, w, eps, p_init, n_queries, dev)
    planner = _Depth(max_rows)
    rows_h = torch.arange(h, device=dev).view(1, h, 1)
    rows_w = torch.arange(w, device=dev).view(1, 1, w)
    ma_alone = ma.clone() if n == 1 else torch.full_like(ma, math.nan)  # each point's best margin evaluated alone, once needed
    ties = _TieWidth(tie_width)
    local = LocalMargins(model, dev, ties.observe) if local_eval else None
    while active.numel():
        t0 = time.perf_counter()
        na = active.numel()
        level = planner.choose(na) if depth is None else 0
        k = depth if depth is not None else 1 << level
        j = torch.arange(na, device=dev).repeat_interleave(k)
        t = it[j] + torch.arange(k, device=dev).repeat(na)
        valid = t < n_queries
        t = t.clamp(max=n_queries - 1)
        size, top, left, col = draws.upto(int(t.max()))
        s, vt, vl = size[t].view(-1, 1, 1), top[t].view(-1, 1, 1), left[t].view(-1, 1, 1)
        window = (rows_h >= vt) & (rows_h < vt + s) & (rows_w >= vl) & (rows_w < vl + s)
        base = xb[j]
        x_new = base + window.unsqueeze(1).to(x.dtype) * col[t].to(x.dtype).view(-1, c, 1, 1)
        x_new = torch.clamp(torch.min(torch.max(x_new, lo_b[j]), hi_b[j]), 0.0, 1.0)
        # A candidate equal to its current best (the window already had the drawn signs) has the
        # current margin, so it cannot improve: its forward pass is skipped (the reference's outcome).
        ask = valid & (x_new != base).flatten(1).any(1)
        m_new = ma[j].clone()
        rows = ask.nonzero()[:, 0]
        if rows.numel():
            m_loc = (local.margins(j[rows], s.view(-1)[rows], vt.view(-1)[rows], vl.view(-1)[rows], x_new[rows], ya[j[rows]], xb, 1.0 + ma[j[rows]].abs())
                     if local else None)
            m_new[rows] = m_loc if m_loc is not None else _margin(model, x_new[rows], ya[j[rows]])
        imp = ask & ((m_new < ma[j]) | (m_new <= 0.0))
        # Ties: a margin within rounding of its best's (or of 0) could compare either way depending on
        # the rows that shared its forward pass; such decisions are taken on margins evaluated alone,
        # so the result does not depend on the depth, the row budget or the timings.
        tol = ties.width * (1.0 + ma[j].abs())
        tie = (ask & (((m_new - ma[j]).abs() <= tol) | (m_new.abs() <= tol))).nonzero()[:, 0]
        if tie.numel():
            pts = torch.unique(j[tie])
            need = pts[torch.isnan(ma_alone[pts])]
            if need.numel():
                ma_alone[need] = _margin_alone(model, xb[need], ya[need])
            if rows.numel() > 1:
                m_tie = _margin_alone(model, x_new[tie], ya[j[tie]])
                ties.observe((m_tie - m_new[tie]).abs() / (1.0 + ma[j[tie]].abs()))
            else:  # a pass of one row is the pass alone
                m_tie = m_new[tie]
            imp[tie] = (m_tie < ma_alone[j[tie]]) | (m_tie <= 0.0)
            m_new[tie] = m_tie
        imp = imp.view(na, k)
        has = imp.any(1)
        first = imp.to(torch.int8).argmax(1)
        step = torch.where(has, first + 1, valid.view(na, k).sum(1))
        if bool(has.any()):
            pick = (torch.arange(na, device=dev) * k + first)[has]
            xb[has] = x_new[pick]
            ma[has] = m_new[pick]
            alone = torch.zeros_like(ask) if rows.numel() > 1 else torch.ones_like(ask)  # margins that are the alone ones
            alone[tie] = True
            ma_alone[has] = torch.where(alone[pick], m_new[pick], math.nan)
            if local is not None:
                pos = torch.full_like(ask, -1, dtype=torch.long)
                pos[rows] = torch.arange(rows.numel(), device=dev)
                local.accepted(pos[pick].tolist())
        it = it + step
        if depth is None:
            planner.record(level, time.perf_counter() - t0, int(step.sum()))
        out = (ma <= 0.0) | (it >= n_queries)
        if bool(out.any()):
            x_best[active[out]] = xb[out]
            keep = ~out
            if local is not None:
                local.keep(keep.nonzero()[:, 0])
            active, xa, xb, ya, ma, lo_b, hi_b, it, ma_alone = (active[keep], xa[keep], xb[keep], ya[keep], ma[keep], lo_b[keep], hi_b[keep], it[keep],
                                                                 ma_alone[keep])
    return x_best
