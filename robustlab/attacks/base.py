"""The attack engine: norms, projections, losses and the template-method base class.

Following foolbox's design, the base class owns everything that is not the attack's step: it
validates that the inputs lie in the model's bounds, handles clean errors (they are returned
unchanged: a clean error is already non-robust), loops over epsilons (:meth:`Attack.sweep`),
projects and clips the result, and scores success. A subclass only writes :meth:`Attack._run`.

All randomness is per sample: each sample has its own seed (``seeds``), so the batch size and the
order of batches never change the result. Gradients are taken with respect to the input only
(``torch.autograd.grad``); model parameters never receive gradients.
"""

from __future__ import annotations

import enum
import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from ..errors import DataError, SuiteError
from ..registry import Registry
from ..seeding import derive_seed

log = logging.getLogger(__name__)

#: Attack classes by name; built-ins register on first lookup.
ATTACKS: "Registry[type[Attack]]" = Registry(
    "attack", group="robustlab.attacks", builtins=("robustlab.attacks.pgd", "robustlab.attacks.malt")
)


class Norm(str, enum.Enum):
    """The threat model's norm."""

    LINF = "linf"
    L2 = "l2"

    @classmethod
    def parse(cls, value: "Norm | str") -> "Norm":
        if isinstance(value, Norm):
            return value
        v = str(value).strip().lower().replace("_", "")
        aliases = {"linf": cls.LINF, "inf": cls.LINF, "l2": cls.L2, "2": cls.L2}
        if v not in aliases:
            raise SuiteError(f"unknown norm {value!r}; use 'linf' or 'l2'.")
        return aliases[v]

    @property
    def autoattack_name(self) -> str:
        return "Linf" if self is Norm.LINF else "L2"


class Loss(str, enum.Enum):
    """Attack objectives: cross-entropy, the difference-of-logits ratio (Croce & Hein 2020) and the
    logit margin (Carlini & Wagner 2017)."""

    CE = "ce"
    DLR = "dlr"
    MARGIN = "margin"


def _view(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample (N,) tensor to broadcast against x (N, ...)."""
    return t.reshape(-1, *([1] * (x.ndim - 1)))


def norms(delta: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Per-sample norms (N,) of perturbations (N, ...)."""
    flat = delta.reshape(delta.shape[0], -1)
    if norm is Norm.LINF:
        return flat.abs().amax(dim=1) if flat.shape[1] else torch.zeros(flat.shape[0], device=delta.device)
    return flat.norm(p=2, dim=1)


def project(delta: torch.Tensor, eps: torch.Tensor | float, norm: Norm) -> torch.Tensor:
    """Project perturbations (N, ...) onto the ``norm`` ball of radius ``eps`` (scalar or (N,))."""
    e = eps if isinstance(eps, torch.Tensor) else torch.full((delta.shape[0],), float(eps), device=delta.device, dtype=delta.dtype)
    e = _view(e.to(delta.dtype), delta)
    if norm is Norm.LINF:
        return torch.maximum(torch.minimum(delta, e), -e)
    n = _view(norms(delta, norm), delta)
    factor = torch.clamp(e / n.clamp_min(1e-12), max=1.0)
    return delta * factor


def normalize_gradient(g: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Steepest-ascent direction for ``norm``: sign for Linf, unit L2 direction for L2. (N, ...)."""
    if norm is Norm.LINF:
        return g.sign()
    return g / _view(norms(g, Norm.L2).clamp_min(1e-12), g)


def uniform_in_ball(seeds: Sequence[int], shape: Sequence[int], norm: Norm, *, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Per-sample uniform samples (N, *shape) in the unit ``norm`` ball; sample i depends only on seeds[i].

    Linf: uniform in the cube. L2: uniform in the ball (direction from a Gaussian, radius u^(1/d)),
    as in foolbox's ``L2PGD`` random start.
    """
    out = torch.empty((len(seeds), *shape), dtype=dtype)
    g = torch.Generator()
    d = 1
    for s in shape:
        d *= int(s)
    for i, s in enumerate(seeds):
        g.manual_seed(int(s) & ((1 << 63) - 1))
        if norm is Norm.LINF:
            out[i] = torch.rand(tuple(shape), generator=g, dtype=dtype) * 2 - 1
        else:
            v = torch.randn(tuple(shape), generator=g, dtype=dtype)
            r = torch.rand((), generator=g, dtype=dtype) ** (1.0 / d)
            out[i] = v / v.norm().clamp_min(1e-12) * r
    return out.to(device)


def attack_loss(logits: torch.Tensor, y: torch.Tensor, loss: Loss, *, targeted: bool) -> torch.Tensor:
    """Per-sample loss (N,) that the attack *maximises*.

    Untargeted: CE(logits, y), DLR (Croce & Hein 2020, eq. 5) or margin max_{j!=y} z_j - z_y.
    Targeted (``y`` are the targets): -CE(logits, t), targeted DLR, or z_t - max_{j!=t} z_j.
    """
    if loss is Loss.CE:
        ce = nn.functional.cross_entropy(logits, y, reduction="none")
        return -ce if targeted else ce
    zy = logits.gather(1, y[:, None])[:, 0]
    other = logits.clone()
    other.scatter_(1, y[:, None], float("-inf"))
    zmax_other = other.amax(dim=1)
    if loss is Loss.MARGIN:
        return zy - zmax_other if targeted else zmax_other - zy
    srt = logits.sort(dim=1).values
    if targeted:
        denom = (srt[:, -1] - 0.5 * (srt[:, -3] + srt[:, -4]) + 1e-12) if logits.shape[1] >= 4 else (srt[:, -1] - srt[:, 0] + 1e-12)
        return (zy - zmax_other) / denom
    denom = (srt[:, -1] - srt[:, -3] + 1e-12) if logits.shape[1] >= 3 else (srt[:, -1] - srt[:, 0] + 1e-12)
    return (zmax_other - zy) / denom


def is_adversarial(logits: torch.Tensor, y: torch.Tensor, *, targeted: bool) -> torch.Tensor:
    """(N,) bool: misclassified (untargeted) or classified as the target (targeted)."""
    pred = logits.argmax(dim=1)
    return pred.eq(y) if targeted else pred.ne(y)


def model_bounds(model: nn.Module, bounds: tuple[float, float] | None) -> tuple[float, float]:
    if bounds is not None:
        lo, hi = float(bounds[0]), float(bounds[1])
    elif hasattr(model, "bounds"):
        lo, hi = (float(b) for b in model.bounds)  # type: ignore[union-attr]
    else:
        raise DataError("this model has no .bounds; pass bounds=(low, high), the input range the model expects.")
    if not hi > lo:
        raise DataError(f"invalid bounds ({lo}, {hi}); the upper bound must exceed the lower bound.")
    return lo, hi


def check_in_bounds(x: torch.Tensor, bounds: tuple[float, float], *, tol: float = 1e-5) -> None:
    lo, hi = bounds
    if x.numel() and (float(x.min()) < lo - tol or float(x.max()) > hi + tol):
        raise DataError(
            f"attack inputs lie in [{float(x.min()):.4g}, {float(x.max()):.4g}], outside the model's bounds [{lo:g}, {hi:g}]; "
            "give inputs in the model's bounds (normalisation belongs inside the model)."
        )


def default_seeds(n: int, *, seed: int = 0, scope: str = "attack") -> list[int]:
    """Seeds for callers that do not track sample ids: seed i depends only on (seed, scope, i)."""
    return [derive_seed(seed, scope, i) for i in range(n)]


@dataclass(frozen=True)
class SweepResult:
    """Outcome of one attack over several epsilons for one batch.

    Attributes:
        epsilons: the budgets, in order.
        x_adv: one (N, ...) tensor per epsilon (clean errors are returned unchanged).
        success: (E, N) bool: adversarial at each epsilon (re-checked on the returned points).
        norms: (E, N) perturbation norms of the returned points.
    """

    epsilons: tuple[float, ...]
    x_adv: tuple[torch.Tensor, ...]
    success: torch.Tensor
    norms: torch.Tensor


class Attack(ABC):
    """Base class of fixed-epsilon attacks (template method; subclasses implement :meth:`_run`).

    ``perturb`` validates inputs, removes clean errors from the computation, calls ``_run`` on the
    rest, then projects onto the epsilon ball and clips to the bounds (a safety net; a correct
    ``_run`` already stays inside).
    """

    norm: Norm = Norm.LINF

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
        if eps < 0:
            raise SuiteError(f"epsilon must be non-negative, got {eps}.")
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
                clean_adv = is_adversarial(model(x), y, targeted=targeted)
            todo = (~clean_adv).nonzero()[:, 0]
        if todo.numel():
            idx = todo.tolist()
            xa = self._run(model, x[todo], y[todo], float(eps), seeds=[seeds[i] for i in idx], early_stop=early_stop, targeted=targeted, bounds=b)
            xa = x[todo] + project(xa - x[todo], float(eps), self.norm)
            out[todo] = xa.clamp(b[0], b[1]).detach()
        return out

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
        """Run :meth:`perturb` at each epsilon and score the returned points (untargeted).

        ``seed_scope(seed, eps)`` may derive per-epsilon seeds (default: the same seeds for all).
        Returns a :class:`SweepResult`; success is re-evaluated on the returned points.
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
            with torch.no_grad():
                succ.append(is_adversarial(model(xa), y.to(xa.device), targeted=False).cpu())
            advs.append(xa)
            nrm.append(norms((xa - x).float(), self.norm).cpu())
        return SweepResult(tuple(float(e) for e in epsilons), tuple(advs), torch.stack(succ) if succ else torch.zeros(0, x.shape[0], dtype=torch.bool), torch.stack(nrm) if nrm else torch.zeros(0, x.shape[0]))

    @abstractmethod
    def _run(
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
