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
from typing import Any, Sequence, cast

import torch
from torch import nn

from ..errors import SuiteError
from .base import ATTACKS, FixedEpsilonAttack
from .geometry import DLR_MIN_CLASSES, DLR_TARGETED_MIN_CLASSES, model_bounds
from .recheck import finite_logits, recheck
from .threat import Norm
from .unit_box import UnitBox

log = logging.getLogger(__name__)

__all__ = ["AAVersion", "AAEngine", "AutoAttackResult", "AutoAttack", "run_autoattack", "attacks_of", "members", "ENSEMBLES"]


class AAVersion(str, enum.Enum):
    STANDARD = "standard"
    RAND = "rand"


class AAEngine(str, enum.Enum):
    FAST = "fast"
    REFERENCE = "reference"


#: The ensembles: registered attack names, in the order they run (Croce & Hein 2020).
ENSEMBLES: dict[AAVersion, tuple[str, ...]] = {
    AAVersion.STANDARD: ("apgd-ce", "apgd-t", "fab-t", "square"),
    AAVersion.RAND: ("apgd-ce", "apgd-dlr"),
}


def attacks_of(version: AAVersion) -> tuple[str, ...]:
    """The attacks of a version, in the order they run."""
    return ENSEMBLES[version]


#: the members whose DLR loss needs this many classes (robustlab's fall back to the logit margin below it)
DLR_MEMBER_CLASSES = {"apgd-t": DLR_TARGETED_MIN_CLASSES, "apgd-dlr": DLR_MIN_CLASSES}


def dlr_short_of(names: Sequence[str], num_classes: int | None) -> list[str]:
    """The members of ``names`` whose DLR loss is undefined for ``num_classes`` classes (none when unknown)."""
    return [a for a in names if num_classes is not None and num_classes < DLR_MEMBER_CLASSES.get(a, 0)]


def members(version: AAVersion, *, norm: Norm, n_iter: int, square_queries: int, seed: int, num_classes: int | None, names: Sequence[str] | None = None,
            batch_size: int = 128) -> dict[str, FixedEpsilonAttack]:
    """The ensemble's attacks from the registry, each configured with AutoAttack's settings that
    it declares among its hyperparameters (``rand``: EOT over 20 draws), and ``max_rows`` (model rows
    per forward pass) from the batch size."""
    settings: dict[str, Any] = {
        "norm": norm, "n_iter": n_iter, "n_queries": square_queries, "seed": seed,
        "eot_iter": 20 if version is AAVersion.RAND else 1, "p_init": 0.8,
        "n_target_classes": 9 if num_classes is None or num_classes >= 10 else max(num_classes - 1, 1),
        "max_rows": max(1, int(batch_size)),
    }
    out: dict[str, FixedEpsilonAttack] = {}
    for name in names if names is not None else ENSEMBLES[version]:
        cls = ATTACKS.get(name)
        attack = cls(**{k: v for k, v in settings.items() if k in cls.hyperparameters()})
        if not isinstance(attack, FixedEpsilonAttack):
            raise SuiteError(f"AutoAttack member {name!r} is not a fixed-epsilon attack.")
        out[name] = attack
    return out


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


def _reference_suite(ref_model: nn.Module, *, norm: Norm, version: AAVersion, eps_u: float, seed: int, dev: torch.device, n_iter: int, square_queries: int, num_classes: int | None) -> Any:
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
        batch_size: points per attack call. The fast engine's APGD-T and FAB-T stack one copy of a
            point per target class, so they get ``batch_size // copies`` points a call: no call runs
            more than ``batch_size`` model rows at once, and peak memory follows the batch size.
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
    lo, hi = model_bounds(model, bounds)
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
        pred = torch.cat([finite_logits(model(x[i : i + batch_size]), "clean inputs").argmax(1) for i in range(0, x.shape[0], batch_size)]) if x.shape[0] else torch.zeros(0, dtype=torch.long, device=dev)
    clean = pred.eq(y)
    with torch.no_grad():
        num_classes = int(model(x[:1]).shape[1]) if x.shape[0] else None
    short = dlr_short_of(to_run, num_classes)
    if engine is AAEngine.REFERENCE and short:
        raise SuiteError(f"the reference engine's {short[0]} needs at least {DLR_MEMBER_CLASSES[short[0]]} classes (its DLR loss indexes that many logits) "
                         f"but the model has {num_classes}; use engine: fast, whose DLR losses fall back to the logit margin.")
    robust = clean.clone()
    fooled_by = ["" if bool(c) else "clean" for c in clean.tolist()]
    x_adv = x.clone()
    after: dict[str, torch.Tensor] = {}
    secs: dict[str, float] = {}
    claimed = rejected = flipped = 0
    ensemble = members(version, norm=norm, n_iter=n_iter, square_queries=square_queries, seed=seed, num_classes=num_classes, names=to_run, batch_size=batch_size)
    suites: dict[bool, tuple[nn.Module, Any]] = {}

    def suite(fp32: bool) -> tuple[nn.Module, Any]:
        """(attack model, the reference's attack objects on its [0, 1] view or None) for fp32 or the view."""
        if fp32 not in suites:
            m = model if fp32 or view is None else view
            ref = UnitBox(m, lo, hi) if unit else m
            aa = _reference_suite(ref, norm=norm, version=version, eps_u=eps_u, seed=seed, dev=dev, n_iter=n_iter, square_queries=square_queries, num_classes=num_classes) if engine is AAEngine.REFERENCE else None
            suites[fp32] = (m, aa)
        return suites[fp32]

    def one(name: str, fp32: bool, xb: torch.Tensor, xub: torch.Tensor, yb: torch.Tensor, sd: Sequence[int]) -> torch.Tensor:
        """Candidates (n, ...) in model bounds of one member on one chunk of still-robust points."""
        m, aa = suite(fp32)
        member = ensemble[name]
        if aa is None:  # fast engine: the member's own run(); every candidate is re-checked below
            return member.run(m, xb, yb, eps, seeds=sd, early_stop=True, targeted=False, bounds=(lo, hi))
        adv = getattr(member, "reference")(aa, xub, yb, seed).detach()
        return cast("torch.Tensor", adv if not unit else lo + (hi - lo) * adv)

    fork_devices = [dev] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=fork_devices):
        for attack in to_run:
            t0 = time.perf_counter()
            idx = robust.nonzero()[:, 0]
            # the fast engine's APGD-T and FAB-T stack one copy per target class: at most batch_size
            # rows at once (the reference engine runs its targets one after another itself)
            step = batch_size if engine is AAEngine.REFERENCE else max(1, batch_size // max(1, ensemble[attack].rows_per_point()))
            for s in range(0, idx.numel(), step):
                bi = idx[s : s + step]
                sd = [seeds[int(i)] for i in bi]
                adv = one(attack, view is None, x[bi], xu[bi], y[bi], sd)
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
                        adv32 = one(attack, True, x[bi][fi], xu[bi][fi], y[bi][fi], [sd[int(i)] for i in fi])
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


@ATTACKS.register("autoattack")
class AutoAttack(FixedEpsilonAttack):
    """AutoAttack as one attack: the ensemble's members from the registry, each on the points still
    robust, every candidate re-checked (:func:`run_autoattack`). Shapes: x (N, C, H, W) -> x_adv.

    References: Croce & Hein, ICML 2020; ``pyautoattack`` 0.2.0.
    """

    def __init__(self, *, norm: Norm | str = Norm.LINF, version: AAVersion | str = AAVersion.STANDARD, engine: AAEngine | str = AAEngine.FAST,
                 n_iter: int = 100, square_queries: int = 5000, seed: int = 0) -> None:
        self.norm = Norm.parse(norm)
        try:
            self.version, self.engine = AAVersion(version), AAEngine(engine)
        except ValueError as exc:
            raise SuiteError(f"autoattack: version is standard or rand and engine fast or reference ({exc}).") from exc
        if n_iter < 1 or square_queries < 1:
            raise SuiteError("autoattack: n_iter and square_queries must be at least 1 (AutoAttack uses 100 and 5000).")
        self.n_iter, self.square_queries, self.seed = int(n_iter), int(square_queries), int(seed)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, seeds: Sequence[int], early_stop: bool, targeted: bool, bounds: tuple[float, float]) -> torch.Tensor:
        if targeted:
            raise SuiteError("autoattack is untargeted.")
        r = run_autoattack(model, x, y, eps=eps, norm=self.norm, version=self.version, engine=self.engine, seed=self.seed, seeds=seeds,
                           batch_size=max(x.shape[0], 1), bounds=bounds, n_iter=self.n_iter, square_queries=self.square_queries)
        return r.x_adv
