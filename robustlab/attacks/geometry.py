"""Norms, projections, step directions, random starts and attack losses: the one copy every attack uses.

Two projections exist on purpose and are named for what they compute: :func:`project` maps a
perturbation delta into the ball (PGD, FGSM, TRADES, SmoothAdv; foolbox's arithmetic) and
:func:`clip_to_ball` maps a point into the ball and the bounds with the arithmetic of the
AutoAttack reference (APGD, MALT), so that APGD stays flag-for-flag equal to ``pyautoattack``.
Likewise two random starts: :func:`uniform_in_ball` (PGD; foolbox) and :func:`random_direction`
(APGD; a point on the unit sphere of the norm, as the reference draws it).
"""

from __future__ import annotations

from typing import Callable, Sequence, cast

import torch
from torch import nn

from ..errors import DataError
from .threat import Loss, Norm

__all__ = [
    "norms", "project", "clip_to_ball", "normalize", "normalize_gradient", "uniform_in_ball", "random_direction",
    "attack_loss", "is_adversarial", "model_bounds", "check_in_bounds",
]


def _view(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample (N,) tensor to broadcast against x (N, ...)."""
    return t.reshape(-1, *([1] * (x.ndim - 1)))


def norms(delta: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Per-sample norms (N,) of perturbations (N, ...)."""
    flat = delta.reshape(delta.shape[0], -1)
    if norm is Norm.LINF:
        return flat.abs().amax(dim=1) if flat.shape[1] else torch.zeros(flat.shape[0], device=delta.device)
    return cast("torch.Tensor", flat.norm(p=2, dim=1))


def project(delta: torch.Tensor, eps: torch.Tensor | float, norm: Norm) -> torch.Tensor:
    """Project perturbations (N, ...) onto the ``norm`` ball of radius ``eps`` (scalar or (N,))."""
    e = eps if isinstance(eps, torch.Tensor) else torch.full((delta.shape[0],), float(eps), device=delta.device, dtype=delta.dtype)
    e = _view(e.to(delta.dtype), delta)
    if norm is Norm.LINF:
        return torch.maximum(torch.minimum(delta, e), -e)
    n = _view(norms(delta, norm), delta)
    factor = torch.clamp(e / n.clamp_min(1e-12), max=1.0)
    return delta * factor


def normalize(t: torch.Tensor, norm: Norm) -> torch.Tensor:
    """``t / (||t|| + 1e-12)`` per sample (N, ...): the AutoAttack reference's normalisation."""
    return t / _view(norms(t, norm), t).add(1e-12)


def clip_to_ball(x: torch.Tensor, x1: torch.Tensor, eps: float, norm: Norm, bounds: tuple[float, float]) -> torch.Tensor:
    """Points x1 (N, ...) moved into the ``eps`` ball around x and into ``bounds`` (the AutoAttack
    reference's arithmetic: clamp for Linf, rescale delta to norm <= eps for L2)."""
    lo, hi = bounds
    if norm is Norm.LINF:
        return torch.clamp(torch.min(torch.max(x1, x - eps), x + eps), lo, hi)
    d = x1 - x
    return torch.clamp(x + normalize(d, Norm.L2) * torch.clamp(_view(norms(d, Norm.L2), d), max=eps), lo, hi)


def normalize_gradient(g: torch.Tensor, norm: Norm) -> torch.Tensor:
    """Steepest-ascent direction for ``norm``: sign for Linf, unit L2 direction for L2. (N, ...)."""
    if norm is Norm.LINF:
        return g.sign()
    return g / _view(norms(g, Norm.L2).clamp_min(1e-12), g)


def _per_sample(seeds: Sequence[int], shape: Sequence[int], dtype: torch.dtype, draw: Callable[[torch.Generator], torch.Tensor]) -> torch.Tensor:
    """(N, *shape): row i is ``draw`` from a CPU generator seeded with seeds[i] (batch-size independent)."""
    out = torch.empty((len(seeds), *shape), dtype=dtype)
    g = torch.Generator()
    for i, s in enumerate(seeds):
        g.manual_seed(int(s) & ((1 << 63) - 1))
        out[i] = draw(g)
    return out


def uniform_in_ball(seeds: Sequence[int], shape: Sequence[int], norm: Norm, *, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Per-sample uniform samples (N, *shape) in the unit ``norm`` ball; sample i depends only on seeds[i].

    Linf: uniform in the cube. L2: uniform in the ball (direction from a Gaussian, radius u^(1/d)),
    as in foolbox's ``L2PGD`` random start.
    """
    shp = tuple(int(s) for s in shape)
    d = 1
    for s in shp:
        d *= s

    def draw(g: torch.Generator) -> torch.Tensor:
        if norm is Norm.LINF:
            return torch.rand(shp, generator=g, dtype=dtype) * 2 - 1
        v = torch.randn(shp, generator=g, dtype=dtype)
        r = torch.rand((), generator=g, dtype=dtype) ** (1.0 / d)
        return cast("torch.Tensor", v / v.norm().clamp_min(1e-12) * r)

    return _per_sample(seeds, shp, dtype, draw).to(device)


def random_direction(seeds: Sequence[int], shape: Sequence[int], norm: Norm, *, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Per-sample random points (N, *shape) on the unit ``norm`` sphere, the AutoAttack reference's
    APGD start (Linf: a uniform cube sample scaled to Linf norm 1; L2: a normalised Gaussian)."""
    shp = tuple(int(s) for s in shape)

    def draw(g: torch.Generator) -> torch.Tensor:
        return 2 * torch.rand(shp, generator=g, dtype=dtype) - 1 if norm is Norm.LINF else torch.randn(shp, generator=g, dtype=dtype)

    return normalize(_per_sample(seeds, shp, dtype, draw).to(device), norm)


#: the fewest classes for which DLR (eq. 5) and its targeted form (eq. 6) are defined; with fewer, the margin
DLR_MIN_CLASSES, DLR_TARGETED_MIN_CLASSES = 3, 4


def attack_loss(logits: torch.Tensor, y: torch.Tensor, loss: Loss, *, targeted: bool = False, target: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample loss (N,) that the attack *maximises*.

    Untargeted: CE(logits, y), DLR (Croce & Hein 2020, eq. 5) or margin max_{j!=y} z_j - z_y.
    Targeted (``y`` are the targets): -CE(logits, t), targeted DLR, or z_t - max_{j!=t} z_j.
    ``Loss.DLR_TARGETED`` (eq. 6, APGD-T): ``y`` the true labels and ``target`` the targets,
    (z_t - z_y) / (z_pi1 - (z_pi3 + z_pi4) / 2).

    DLR's denominator needs the third largest logit (untargeted) or the fourth (targeted). With fewer
    classes the loss is its numerator, the logit margin (as ``Loss.MARGIN``): any other scale, such as
    z_max - z_min, makes the ratio a constant +-1 on a binary model, whose gradient is zero.
    """
    if loss is Loss.CE:
        ce = nn.functional.cross_entropy(logits, y, reduction="none")
        return -ce if targeted else ce
    if loss is Loss.DLR_TARGETED:
        if target is None:
            raise ValueError("the DLR-targeted loss needs a target per sample")
        u = torch.arange(logits.shape[0], device=logits.device)
        return _dlr_ratio(logits[u, target] - logits[u, y], logits, targeted=True)
    zy = logits.gather(1, y[:, None])[:, 0]
    other = logits.clone()
    other.scatter_(1, y[:, None], float("-inf"))
    zmax_other = other.amax(dim=1)
    if loss is Loss.MARGIN:
        return zy - zmax_other if targeted else zmax_other - zy
    return _dlr_ratio(zy - zmax_other if targeted else zmax_other - zy, logits, targeted=targeted)


def _dlr_ratio(margin: torch.Tensor, logits: torch.Tensor, *, targeted: bool) -> torch.Tensor:
    """DLR: ``margin`` over z_pi1 - z_pi3 (targeted: z_pi1 - (z_pi3 + z_pi4) / 2); ``margin`` itself when
    the logits have too few classes for that scale."""
    if logits.shape[1] < (DLR_TARGETED_MIN_CLASSES if targeted else DLR_MIN_CLASSES):
        return margin
    srt = logits.sort(dim=1).values
    return margin / (srt[:, -1] - (0.5 * (srt[:, -3] + srt[:, -4]) if targeted else srt[:, -3]) + 1e-12)


def is_adversarial(logits: torch.Tensor, y: torch.Tensor, *, targeted: bool) -> torch.Tensor:
    """(N,) bool: misclassified (untargeted) or classified as the target (targeted)."""
    pred = logits.argmax(dim=1)
    return pred.eq(y) if targeted else pred.ne(y)


def model_bounds(model: nn.Module, bounds: tuple[float, float] | None) -> tuple[float, float]:
    """``bounds`` or ``model.bounds`` as two floats; an error users can act on when neither exists."""
    if bounds is not None:
        lo, hi = float(bounds[0]), float(bounds[1])
    else:
        b = getattr(model, "bounds", None)
        if b is None:
            raise DataError("this model has no .bounds; pass bounds=(low, high), the input range the model expects.")
        lo, hi = float(b[0]), float(b[1])
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
