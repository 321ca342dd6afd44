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
        flipped: candidates the attack view (e.g. bf16 autocast) found adversarial that the fp32
            model classifies correctly; each was attacked again in fp32 by the same attack.
    """

    x_adv: torch.Tensor
    clean_correct: torch.Tensor
    robust: torch.Tensor
    robust_after: dict[str, torch.Tensor]
    fooled_by: list[str]
    seconds: dict[str, float] = field(default_factory=dict)
    claimed: int = 0
    rejected: int = 0
    flipped: int = 0


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
        """Reference FAB-T whose target class is given per point (so all targets run in one batch).

        FAB attacks only the copies its own clean check finds correct; the indices of those copies
        are the first thing ``attack_single_run`` passes to ``check_shape``, so they are captured
        there and every copy keeps its own target even when that check drops some copies.
        """

        targets: torch.Tensor | None = None
        _kept: torch.Tensor | None = None
        _capture: bool = False

        def attack_single_run(self, x: torch.Tensor, y: Any = None, use_rand_start: bool = False, is_targeted: bool = False) -> Any:
            self._kept, self._capture = None, self.targets is not None
            try:
                return super().attack_single_run(x, y, use_rand_start=use_rand_start, is_targeted=is_targeted)
            finally:
                self._kept, self._capture = None, False

        def check_shape(self, x: torch.Tensor) -> torch.Tensor:
            out = super().check_shape(x)
            if self._capture:
                self._kept, self._capture = out, False
            return out  # type: ignore[no-any-return]

        def get_diff_logits_grads_batch_targeted(self, imgs: torch.Tensor, la: torch.Tensor, la_target: torch.Tensor) -> Any:
            t = la_target
            if self.targets is not None and self._kept is not None:
                t = self.targets.to(imgs.device)[self._kept.to(imgs.device)]
                assert t.shape[0] == imgs.shape[0], "FAB-T: one target per attacked copy"
            return super().get_diff_logits_grads_batch_targeted(imgs, la, t)

    return _BatchedTargetFAB


def _reference_suite(ref_model: nn.Module, *, engine: AAEngine, norm: Norm, version: AAVersion, eps_u: float, seed: int, dev: torch.device, n_iter: int, square_queries: int, num_classes: int | None) -> Any:
    """pyautoattack's attack objects on ``ref_model`` (a model on [0, 1]) with robustlab's budgets."""
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
    return aa


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
    attack_model: nn.Module | None = None,
) -> AutoAttackResult:
    """Run AutoAttack and return per-point, per-attack outcomes.

    Args:
        model: the fp32 model, mapping (N, C, H, W) inputs in ``bounds`` to logits (N, K). Clean
            flags and the re-check of every candidate use it.
        x: (N, C, H, W) in bounds; y: (N,) labels.
        eps: budget in the norm; version: ``standard`` or ``rand`` (randomised models, EOT 20).
        engine: ``fast`` (robustlab APGD with early exit) or ``reference`` (pyautoattack's code).
        seed: seed of the reference attacks (global RNG, restored afterwards).
        seeds: (N,) per-point seeds of the fast engine's random starts (default derived from ``seed``).
        n_iter, square_queries: budgets (100 and 5000 in AutoAttack; lower only for tests).
        attacks: a subset of the version's attacks (default: all of them).
        attack_model: a faster view of ``model`` for the attack iterations (e.g. bf16 autocast).
            A candidate it finds adversarial that ``model`` classifies correctly is counted in
            ``flipped`` and the same attack runs again on that point with ``model``, so the lower
            precision never leaves a point robust that the fp32 attack would break.

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
    view = attack_model if attack_model is not None and attack_model is not model else None
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
    claimed = rejected = flipped = 0
    suites: dict[bool, tuple[nn.Module, nn.Module, Any]] = {}
    needs_reference = engine is AAEngine.REFERENCE or any(a in ("fab-t", "square") for a in to_run)

    def suite(fp32: bool) -> tuple[nn.Module, nn.Module, Any]:
        """(attack model, its [0, 1] view, the reference's attack objects) for fp32 or the view."""
        if fp32 not in suites:
            m = model if fp32 or view is None else view
            ref = _UnitBox(m, lo, hi) if unit else m
            aa = _reference_suite(ref, engine=engine, norm=norm, version=version, eps_u=eps_u, seed=seed, dev=dev, n_iter=n_iter, square_queries=square_queries, num_classes=num_classes) if needs_reference else None
            suites[fp32] = (m, ref, aa)
        return suites[fp32]

    fork_devices = [dev] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        for attack in to_run:
            t0 = time.perf_counter()
            idx = robust.nonzero()[:, 0]
            for s in range(0, idx.numel(), batch_size):
                bi = idx[s : s + batch_size]
                sd = [seeds[int(i)] for i in bi]
                am, ref, aa = suite(view is None)
                adv = _run_one(attack, engine, aa, am, ref, x[bi], xu[bi], y[bi], eps, eps_u, norm, version, sd, (lo, hi), n_iter, seed)
                rc = recheck(model, x[bi], adv, y[bi], eps, norm, (lo, hi))
                ok = rc.valid.to(dev)
                claimed += int(rc.misclassified.sum())
                rejected += int((rc.misclassified & ~rc.valid).sum())
                if view is not None:
                    with torch.no_grad():
                        flip = view(adv).argmax(1).ne(y[bi]).cpu() & ~rc.misclassified
                    if bool(flip.any()):
                        flipped += int(flip.sum())
                        fi = flip.nonzero()[:, 0].to(dev)
                        m32, ref32, aa32 = suite(True)
                        adv32 = _run_one(attack, engine, aa32, m32, ref32, x[bi][fi], xu[bi][fi], y[bi][fi], eps, eps_u, norm, version, [sd[int(i)] for i in fi], (lo, hi), n_iter, seed)
                        rc32 = recheck(model, x[bi][fi], adv32, y[bi][fi], eps, norm, (lo, hi))
                        ok32 = rc32.valid.to(dev)
                        claimed += int(rc32.misclassified.sum())
                        rejected += int((rc32.misclassified & ~rc32.valid).sum())
                        adv = adv.clone()
                        adv[fi[ok32]] = adv32[ok32]
                        ok = ok.clone()
                        ok[fi[ok32]] = True
                hit = bi[ok]
                robust[hit] = False
                x_adv[hit] = adv[ok]
                for i in hit.tolist():
                    fooled_by[i] = attack
            after[attack] = robust.clone()
            secs[attack] = time.perf_counter() - t0
    return AutoAttackResult(x_adv=x_adv, clean_correct=clean, robust=robust, robust_after=after, fooled_by=fooled_by, seconds=secs, claimed=claimed, rejected=rejected, flipped=flipped)


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
