"""The attack contract (foolbox 3's pattern): one registry, typed keyword-only hyperparameters,
one hook, and final entry points that own validation, the epsilon loop and the re-check.

* :class:`FixedEpsilonAttack` -- a subclass writes only :meth:`FixedEpsilonAttack.run` (candidates
  inside the ``eps`` ball). The final :meth:`~FixedEpsilonAttack.perturb` (also ``__call__``)
  validates the bounds, leaves clean errors unchanged, projects and clips the candidates (a safety
  net), and the final :meth:`~FixedEpsilonAttack.sweep` loops over epsilons and re-checks every
  returned example (finite, in the ball, in bounds, misclassified).
* :class:`MinimizationAttack` -- a subclass writes only :meth:`MinimizationAttack.run` (the
  smallest adversarial example it finds). The final ``__call__`` re-checks every example and
  returns per-point minimal norms; the final ``sweep`` reads every epsilon off one run.

``perturb``, ``__call__`` and ``sweep`` are ``typing.final`` (mypy rejects an override) and
``__init_subclass__`` refuses a subclass that defines them, so every attack is scored the same way.
Hyperparameters are the keyword-only arguments of ``__init__`` with defaults;
:meth:`Attack.hyperparameters` lists them (the generic ``attack`` check validates suites with it).

All randomness is per sample: each sample has its own seed (``seeds``), so the batch size and the
order of batches never change the result. Gradients are taken with respect to the input only.
"""

from __future__ import annotations

import inspect
import logging
import math
import typing
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Sequence, final

import torch
from torch import nn

from ..errors import SuiteError
from ..registry import Registry
from ..seeding import derive_seed
from .geometry import attack_loss, check_in_bounds, is_adversarial, model_bounds, norms, normalize_gradient, project, uniform_in_ball
from .recheck import finite_logits, recheck
from .threat import Loss, Norm

log = logging.getLogger(__name__)

__all__ = [
    "ATTACKS", "Attack", "FixedEpsilonAttack", "MinimizationAttack", "SweepResult", "MinimalResult", "Norm", "Loss",
    "norms", "project", "normalize_gradient", "uniform_in_ball", "attack_loss", "is_adversarial", "model_bounds",
    "check_in_bounds", "default_seeds", "Hyperparameter",
]

#: Attack classes by name; built-ins register on first lookup, third parties via the
#: ``robustlab.attacks`` entry-point group.
ATTACKS: "Registry[type[Attack]]" = Registry("attack", group="robustlab.attacks", package="robustlab.attacks")

_FINAL = ("perturb", "__call__", "sweep")


def default_seeds(n: int, *, seed: int = 0, scope: str = "attack") -> list[int]:
    """Seeds for callers that do not track sample ids: seed i depends only on (seed, scope, i)."""
    return [derive_seed(seed, scope, i) for i in range(n)]


@dataclass(frozen=True)
class Hyperparameter:
    """One keyword-only hyperparameter of an attack: name, annotation (resolved) and default."""

    name: str
    annotation: Any
    default: Any


@dataclass(frozen=True)
class SweepResult:
    """Outcome of one attack over several epsilons for one batch.

    Attributes:
        epsilons: the budgets, in order.
        x_adv: one (N, ...) tensor per epsilon (clean errors are returned unchanged).
        success: (E, N) bool: a valid adversarial example at each epsilon (re-checked by the base).
        norms: (E, N) perturbation norms of the returned points.
    """

    epsilons: tuple[float, ...]
    x_adv: tuple[torch.Tensor, ...]
    success: torch.Tensor
    norms: torch.Tensor


@dataclass(frozen=True)
class MinimalResult:
    """x_adv (N, ...) and min_norm (N,): the re-checked minimal norm, 0 for clean errors, +inf
    where the attack found no valid adversarial example."""

    x_adv: torch.Tensor
    min_norm: torch.Tensor


class Attack(ABC):
    """Common base: ``norm`` and the hyperparameter introspection. Subclass
    :class:`FixedEpsilonAttack` or :class:`MinimizationAttack`, never this class directly."""

    norm: Norm = Norm.LINF
    #: norms the attack supports (the generic check rejects others before a model loads).
    norms_supported: ClassVar[tuple[Norm, ...]] = (Norm.LINF, Norm.L2)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name in _FINAL:
            if name in cls.__dict__ and cls.__module__ != __name__:
                raise TypeError(f"{cls.__qualname__} overrides {name}(), which is final in robustlab.attacks.base; implement run() instead.")

    @classmethod
    def hyperparameters(cls) -> dict[str, Hyperparameter]:
        """The keyword-only ``__init__`` arguments (name -> annotation and default)."""
        sig = inspect.signature(cls.__init__)
        try:
            hints = typing.get_type_hints(cls.__init__)
        except (NameError, TypeError):  # an annotation that cannot be resolved is taken as Any
            hints = {}
        return {
            p.name: Hyperparameter(p.name, hints.get(p.name, Any), p.default)
            for p in sig.parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        }

    @property
    def minimal(self) -> bool:
        return isinstance(self, MinimizationAttack)

    def rows_per_point(self) -> int:
        """At most how many model rows one input point costs inside :meth:`run` at once (an attack
        that stacks copies of a point, e.g. one per target class, returns the number of copies).
        :meth:`FixedEpsilonAttack.perturb` and AutoAttack give ``run`` at most ``batch // rows``
        points per call, so peak memory follows the caller's batch size, not batch x copies."""
        return 1


class FixedEpsilonAttack(Attack):
    """Attacks that look for an adversarial example inside a given ``eps`` ball (template method)."""

    @final
    def perturb(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        eps: float,
        *,
        seeds: Sequence[int] | None = None,
        early_stop: bool = True,
        targeted: bool = False,
        bounds: tuple[float, float] | None = None,
        include_clean_errors: bool = False,
    ) -> torch.Tensor:
        """Adversarial examples (N, C, H, W) inside the ``eps`` ball around ``x`` and inside bounds.

        Args:
            model: maps inputs (N, C, H, W) in ``bounds`` to logits (N, K); a ``RobustModel`` or any
                ``nn.Module`` (training mode allowed; pass ``bounds``).
            x: (N, C, H, W) clean inputs in bounds. y: (N,) labels (targets when ``targeted``).
            eps: the budget in the attack's norm.
            seeds: one seed per sample (default: derived from the sample's position).
            early_stop: drop points from the computation as soon as they are adversarial.
            targeted: make the model predict ``y`` instead of avoiding it.
            bounds: input range; defaults to ``model.bounds``.
            include_clean_errors: also perturb points the model already misclassifies (adversarial
                training needs this; for evaluation a clean error is already non-robust and is
                returned unchanged).
        """
        if not eps >= 0 or not math.isfinite(eps):
            raise SuiteError(f"epsilon must be a non-negative finite number, got {eps}.")
        b = model_bounds(model, bounds)
        check_in_bounds(x, b)
        if seeds is None:
            seeds = default_seeds(x.shape[0])
        if len(seeds) != x.shape[0]:
            raise ValueError(f"{len(seeds)} seeds for {x.shape[0]} samples")
        x = x.detach()
        y = y.to(x.device)
        out = x.clone()
        if x.shape[0] == 0 or eps == 0:
            return out
        if targeted or include_clean_errors:
            todo = torch.arange(x.shape[0], device=x.device)
        else:
            with torch.no_grad():
                clean_adv = is_adversarial(finite_logits(model(x), "clean inputs"), y, targeted=targeted)
            todo = (~clean_adv).nonzero()[:, 0]
        # no more model rows at once than the points given: an attack that stacks copies of a point
        # gets the points in chunks (its per-point results do not depend on the other points)
        step = max(1, x.shape[0] // max(1, self.rows_per_point()))
        for s in range(0, todo.numel(), step):
            part = todo[s : s + step]
            idx = part.tolist()
            xa = self.run(model, x[part], y[part], float(eps), seeds=[seeds[i] for i in idx], early_stop=early_stop, targeted=targeted, bounds=b)
            xa = x[part] + project(xa - x[part], float(eps), self.norm)
            out[part] = xa.clamp(b[0], b[1]).detach()
        return out

    @final
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, **kwargs: Any) -> torch.Tensor:
        """Same as :meth:`perturb`."""
        return self.perturb(model, x, y, eps, **kwargs)

    @final
    def sweep(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        epsilons: Sequence[float],
        *,
        seeds: Sequence[int] | None = None,
        early_stop: bool = True,
        bounds: tuple[float, float] | None = None,
        seed_scope: Callable[[int, float], int] | None = None,
    ) -> SweepResult:
        """Run :meth:`perturb` at each epsilon and re-check every returned point (untargeted).

        ``seed_scope(seed, eps)`` may derive per-epsilon seeds (default: the same seeds for all).
        Success means a valid adversarial example: finite, in the ball, in bounds, misclassified.
        """
        b = model_bounds(model, bounds)
        if seeds is None:
            seeds = default_seeds(x.shape[0])
        advs: list[torch.Tensor] = []
        succ: list[torch.Tensor] = []
        nrm: list[torch.Tensor] = []
        for e in epsilons:
            s = [seed_scope(int(si), float(e)) for si in seeds] if seed_scope else list(seeds)
            xa = self.perturb(model, x, y, float(e), seeds=s, early_stop=early_stop, bounds=b)
            rc = recheck(model, x, xa, y, float(e), self.norm, b)
            succ.append(rc.valid)
            advs.append(xa)
            nrm.append(rc.norms)
        empty = torch.zeros(0, x.shape[0])
        return SweepResult(tuple(float(e) for e in epsilons), tuple(advs), torch.stack(succ) if succ else empty.bool(), torch.stack(nrm) if nrm else empty)

    @abstractmethod
    def run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        eps: float,
        *,
        seeds: Sequence[int],
        early_stop: bool,
        targeted: bool,
        bounds: tuple[float, float],
    ) -> torch.Tensor:
        """The attack itself on (n, ...) points that still need work; returns (n, ...) candidates."""


class MinimizationAttack(Attack):
    """Attacks that look for the smallest adversarial perturbation (FMN, CW, DeepFool)."""

    @final
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, seeds: Sequence[int] | None = None, bounds: tuple[float, float] | None = None) -> MinimalResult:
        """Minimal adversarial examples of the clean-correct points of x (N, C, H, W), re-checked:
        min_norm is 0 for clean errors and +inf where no valid example was found."""
        b = model_bounds(model, bounds)
        check_in_bounds(x, b)
        if seeds is None:
            seeds = default_seeds(x.shape[0])
        x = x.detach()
        y = y.to(x.device)
        with torch.no_grad():
            correct = finite_logits(model(x), "clean inputs").argmax(1).eq(y) if x.shape[0] else torch.zeros(0, dtype=torch.bool, device=x.device)
        x_adv = x.clone()
        if bool(correct.any()):
            idx = correct.nonzero()[:, 0]
            xa = self.run(model, x[idx], y[idx], seeds=[seeds[int(i)] for i in idx], bounds=b)
            x_adv[idx] = xa.detach().to(x.dtype)
        if not x.shape[0]:
            return MinimalResult(x_adv, torch.zeros(0))
        rc = recheck(model, x, x_adv, y, math.inf, self.norm, b)
        found = rc.valid & correct.cpu()
        out = torch.where(found, rc.norms.clone(), torch.full_like(rc.norms, math.inf))
        out[~correct.cpu()] = 0.0
        return MinimalResult(x_adv, out)

    @final
    def sweep(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, epsilons: Sequence[float], *, seeds: Sequence[int] | None = None, bounds: tuple[float, float] | None = None) -> SweepResult:
        """One minimal-norm run read at each epsilon: success at eps = a valid example with norm <= eps."""
        r = self(model, x, y, seeds=seeds, bounds=bounds)
        eps = tuple(float(e) for e in epsilons)
        succ = torch.stack([(r.min_norm > 0) & (r.min_norm <= e) for e in eps]) if eps else torch.zeros(0, x.shape[0], dtype=torch.bool)
        advs = tuple(torch.where((s.to(x.device)).reshape(-1, *([1] * (x.ndim - 1))), r.x_adv, x) for s in succ)
        nrm = torch.stack([torch.where(s, r.min_norm, torch.zeros_like(r.min_norm)) for s in succ]) if eps else torch.zeros(0, x.shape[0])
        return SweepResult(eps, advs, succ, nrm)

    @abstractmethod
    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, seeds: Sequence[int], bounds: tuple[float, float]) -> torch.Tensor:
        """Smallest adversarial candidates (n, ...) for n clean-correct points (re-checked by the base)."""
