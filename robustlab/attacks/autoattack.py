"""AutoAttack (Croce & Hein 2020): the ``standard`` and ``rand`` versions, Linf and L2, with two
engines.

* ``reference``: the attack classes of ``pyautoattack`` (the authors' code), driven by the same
  loop as ``AutoAttack.run_standard_evaluation`` (each attack only on points still robust, in
  chunks of ``batch_size``, each attack seeded with ``seed`` on the global RNG, which is saved and
  restored around the run so nothing leaks). Same seed and data: the same robust flags as calling
  ``pyautoattack`` directly.
* ``fast`` (default): robustlab's APGD-CE / APGD-T with early exit and per-sample seeds
  (:mod:`robustlab.attacks.apgd`), FAB-T from the reference with all target classes of a point in
  one batch (FAB-T without restarts is deterministic, so the flags are those of the reference), and
  Square: a lean re-implementation for Linf that draws the reference's random numbers in the
  reference's order (:mod:`robustlab.attacks.square`), the reference class for L2.

Two defects of ``pyautoattack`` 0.2.0 are worked around without touching the package:

1. Non-contiguous inputs (e.g. channels-last or a permuted NHWC array) crash APGD with
   ``RuntimeError: view size is not compatible with input tensor's size and stride``:
   ``grad = torch.zeros_like(x)`` inherits the input's strides and ``checks.check_zero_gradients``
   (DLR losses) and ``APGDAttack.normalize`` (L2) call ``.view`` on it. Inputs are made contiguous.
2. Every reference attack clamps to the literal range [0, 1]. Models with other bounds are wrapped
   so the reference sees [0, 1] inputs (and eps / (hi - lo)); results are mapped back.
"""

from __future__ import annotations

import enum
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
from torch import nn

from ..errors import SuiteError
from .apgd import APGD
from .base import Norm, norms
from .scoring import recheck

log = logging.getLogger(__name__)

__all__ = ["AAVersion", "AAEngine", "AutoAttackResult", "run_autoattack", "attacks_of"]


class AAVersion(str, enum.Enum):
    STANDARD = "standard"
    RAND = "rand"


class AAEngine(str, enum.Enum):
    FAST = "fast"
    REFERENCE = "reference"


def attacks_of(version: AAVersion) -> tuple[str, ...]:
    """The attacks of a version, in the order they run."""
    return ("apgd-ce", "apgd-t", "fab-t", "square") if version is AAVersion.STANDARD else ("apgd-ce", "apgd-dlr")


@dataclass(frozen=True)
class AutoAttackResult:
    """Outcome of AutoAttack on N points.

    Attributes:
        x_adv: (N, C, H, W): the adversarial example of each non-robust point, the clean point otherwise.
        clean_correct: (N,) bool.
        robust: (N,) bool: correct and no attack found an adversarial example (worst case over attacks).
        robust_after: attack name -> (N,) bool robust flags after that attack (cumulative, in order).
        fooled_by: (N,) name of the attack that first broke the point, ``"clean"`` for clean errors,
            ``""`` for robust points.
        seconds: attack name -> wall time.
        claimed, rejected: misclassified candidates returned by the attacks, and how many of them
            robustlab's re-check rejected (outside the ball or bounds, or non-finite).
    """

    x_adv: torch.Tensor
    clean_correct: torch.Tensor
    robust: torch.Tensor
    robust_after: dict[str, torch.Tensor]
    fooled_by: list[str]
    seconds: dict[str, float] = field(default_factory=dict)
    claimed: int = 0
    rejected: int = 0


class _UnitBox(nn.Module):
    """Presents a model with bounds (lo, hi) as a model on [0, 1] (the reference's fixed range)."""

    def __init__(self, model: nn.Module, lo: float, hi: float) -> None:
        super().__init__()
        self.model = model
        self.lo, self.hi = lo, hi

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.model(self.lo + (self.hi - self.lo) * u)


def _reference_fab_batched() -> type:
    from pyautoattack.fab_pt import FABAttack_PT

    class _BatchedTargetFAB(FABAttack_PT):  # type: ignore[misc, valid-type]
        """Reference FAB-T whose target class is given per point (so all targets run in one batch)."""

        targets: torch.Tensor | None = None

        def get_diff_logits_grads_batch_targeted(self, imgs: torch.Tensor, la: torch.Tensor, la_target: torch.Tensor) -> Any:
            t = self.targets if self.targets is not None and self.targets.shape[0] == imgs.shape[0] else la_target
            return super().get_diff_logits_grads_batch_targeted(imgs, la, t)

    return _BatchedTargetFAB


def run_autoattack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: Norm | str = Norm.LINF,
    version: AAVersion | str = AAVersion.STANDARD,
    engine: AAEngine | str = AAEngine.FAST,
    seed: int = 0,
    seeds: Sequence[int] | None = None,
    batch_size: int = 250,
    bounds: tuple[float, float] | None = None,
    n_iter: int = 100,
    square_queries: int = 5000,
    attacks: Sequence[str] | None = None,
) -> AutoAttackResult:
    """Run AutoAttack and return per-point, per-attack outcomes.

    Args:
        model: maps (N, C, H, W) inputs in ``bounds`` to logits (N, K).
        x: (N, C, H, W) in bounds; y: (N,) labels.
        eps: budget in the norm; version: ``standard`` or ``rand`` (randomised models, EOT 20).
        engine: ``fast`` (robustlab APGD with early exit) or ``reference`` (pyautoattack's code).
        seed: seed of the reference attacks (global RNG, restored afterwards).
        seeds: (N,) per-point seeds of the fast engine's random starts (default derived from ``seed``).
        n_iter, square_queries: budgets (100 and 5000 in AutoAttack; lower only for tests).
        attacks: a subset of the version's attacks (default: all of them).

    References: Croce & Hein, ICML 2020; ``pyautoattack`` 0.2.0 (authors' code).
    """
    from ..seeding import derive_seed

    norm = Norm.parse(norm)
    version = AAVersion(version)
    engine = AAEngine(engine)
    if bounds is None:
        bounds = tuple(float(b) for b in model.bounds)  # type: ignore[union-attr, assignment]
    assert bounds is not None
    lo, hi = float(bounds[0]), float(bounds[1])
    to_run = tuple(attacks) if attacks is not None else attacks_of(version)
    unknown = [a for a in to_run if a not in attacks_of(version)]
    if unknown:
        raise SuiteError(f"AutoAttack {version.value} has no attack {', '.join(unknown)}; choose from {', '.join(attacks_of(version))}.")
    if seeds is None:
        seeds = [derive_seed(seed, "autoattack", i) for i in range(x.shape[0])]
    dev = x.device
    x = x.detach().contiguous()  # workaround 1 (see module docstring)
    y = y.to(dev)
    unit = (lo, hi) != (0.0, 1.0)
    ref_model: nn.Module = _UnitBox(model, lo, hi) if unit else model
    scale = hi - lo
    xu = (x - lo) / scale if unit else x
    eps_u = eps / scale

    with torch.no_grad():
        pred = torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, x.shape[0], batch_size)]) if x.shape[0] else torch.zeros(0, dtype=torch.long, device=dev)
    clean = pred.eq(y)
    with torch.no_grad():
        num_classes = int(model(x[:1]).shape[1]) if x.shape[0] else None
    robust = clean.clone()
    fooled_by = ["" if bool(c) else "clean" for c in clean.tolist()]
    x_adv = x.clone()
    after: dict[str, torch.Tensor] = {}
    secs: dict[str, float] = {}
    claimed = rejected = 0

    aa = None
    fork_devices = [dev] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        if engine is AAEngine.REFERENCE or any(a in ("fab-t", "square") for a in to_run):
            from pyautoattack import AutoAttack

            aa = AutoAttack(ref_model, norm=norm.autoattack_name, eps=eps_u, seed=seed, version=version.value, device=dev)
            aa.logger.setLevel(logging.WARNING)
            for a_ in (aa.apgd, aa.apgd_targeted):
                a_.n_iter = n_iter
                a_.n_iter_2, a_.n_iter_min, a_.size_decr = max(int(0.22 * n_iter), 1), max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)
            aa.fab.n_iter = n_iter
            aa.square.n_queries = square_queries
            if num_classes is not None and num_classes < 10:  # the reference indexes 9 targets
                aa.apgd_targeted.n_target_classes = aa.fab.n_target_classes = max(num_classes - 1, 1)
            if engine is AAEngine.FAST:
                fab_cls = _reference_fab_batched()
                aa.fab = fab_cls(ref_model, n_restarts=1, n_iter=n_iter, eps=eps_u, seed=seed, norm=norm.autoattack_name, verbose=False, device=dev, n_target_classes=aa.fab.n_target_classes)
        for attack in to_run:
            t0 = time.perf_counter()
            idx = robust.nonzero()[:, 0]
            for s in range(0, idx.numel(), batch_size):
                bi = idx[s : s + batch_size]
                adv = _run_one(attack, engine, aa, model, ref_model, x[bi], xu[bi], y[bi], eps, eps_u, norm, version, [seeds[int(i)] for i in bi], (lo, hi), n_iter, seed)
                rc = recheck(model, x[bi], adv, y[bi], eps, norm, (lo, hi))
                ok = rc.valid.to(dev)
                claimed += int(rc.misclassified.sum())
                rejected += int((rc.misclassified & ~rc.valid).sum())
                hit = bi[ok]
                robust[hit] = False
                x_adv[hit] = adv[ok]
                for i in hit.tolist():
                    fooled_by[i] = attack
            after[attack] = robust.clone()
            secs[attack] = time.perf_counter() - t0
    return AutoAttackResult(x_adv=x_adv, clean_correct=clean, robust=robust, robust_after=after, fooled_by=fooled_by, seconds=secs, claimed=claimed, rejected=rejected)


def _run_one(
    attack: str,
    engine: AAEngine,
    aa: Any,
    model: nn.Module,
    ref_model: nn.Module,
    x: torch.Tensor,
    xu: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    eps_u: float,
    norm: Norm,
    version: AAVersion,
    seeds: Sequence[int],
    bounds: tuple[float, float],
    n_iter: int,
    seed: int,
) -> torch.Tensor:
    """One attack on one chunk of still-robust points; returns candidates (n, ...) in model bounds."""
    lo, hi = bounds
    eot = 20 if version is AAVersion.RAND else 1
    if engine is AAEngine.FAST and attack in ("apgd-ce", "apgd-dlr", "apgd-t"):
        loss = {"apgd-ce": "ce", "apgd-dlr": "dlr", "apgd-t": "dlr-targeted"}[attack]
        return APGD(norm=norm, n_iter=n_iter, loss=loss, eot_iter=eot).run(model, x, y, eps, seeds=seeds, bounds=bounds).x_adv
    if engine is AAEngine.FAST and attack == "square" and norm is Norm.LINF:
        from .square import square_linf

        adv = square_linf(ref_model, xu, y, eps_u, n_queries=int(aa.square.n_queries), p_init=float(aa.square.p_init), seed=seed)
    elif engine is AAEngine.FAST and attack == "fab-t":
        adv = _fab_t_batched(aa, ref_model, xu, y, eps_u, norm)
    elif attack in ("apgd-ce", "apgd-dlr"):
        aa.apgd.loss = "ce" if attack == "apgd-ce" else "dlr"
        aa.apgd.seed = seed
        adv = aa.apgd.perturb(xu, y)
    elif attack == "apgd-t":
        aa.apgd_targeted.seed = seed
        adv = aa.apgd_targeted.perturb(xu, y)
    elif attack == "fab-t":
        aa.fab.targeted = True
        aa.fab.n_restarts = 1
        aa.fab.seed = seed
        adv = aa.fab.perturb(xu, y)
    elif attack == "square":
        aa.square.seed = seed
        adv = aa.square.perturb(xu, y)
    else:  # pragma: no cover - guarded by run_autoattack
        raise SuiteError(f"unknown AutoAttack attack {attack!r}")
    adv = adv.detach()
    return adv if (lo, hi) == (0.0, 1.0) else lo + (hi - lo) * adv


def _fab_t_batched(aa: Any, ref_model: nn.Module, xu: torch.Tensor, y: torch.Tensor, eps_u: float, norm: Norm) -> torch.Tensor:
    """Reference FAB-T with the 9 target classes of every point stacked into one batch.

    FAB-T with one restart starts from the clean point (no randomness), and its iterations are
    per point, so each copy follows the trajectory the reference's sequential loop would give.
    A point is broken when any copy ends misclassified within eps (the reference's rule).
    """
    fab = aa.fab
    fab.targeted = True
    with torch.no_grad():
        order = ref_model(xu).sort(dim=1)[1]
    k = min(fab.n_target_classes, order.shape[1] - 1)
    n = xu.shape[0]
    xs = xu.repeat(k, 1, 1, 1)
    ys = y.repeat(k)
    fab.targets = torch.cat([order[:, -tc] for tc in range(2, k + 2)])
    fab.target_class = 2
    fab.device = xu.device
    fab.orig_dim = list(xs.shape[1:])
    fab.ndims = len(fab.orig_dim)
    try:
        with torch.no_grad():
            adv = fab.attack_single_run(xs, ys, use_rand_start=False, is_targeted=True)
    finally:
        fab.targets = None
    with torch.no_grad():
        wrong = ref_model(adv).argmax(1).ne(ys)
        inside = norms(adv - xs, norm) <= eps_u
    ok = (wrong & inside).reshape(k, n)
    out = xu.clone()
    for j in range(k - 1, -1, -1):  # the first target that succeeds wins, as in the sequential loop
        sel = ok[j]
        out[sel] = adv.reshape(k, n, *xu.shape[1:])[j][sel]
    return out
