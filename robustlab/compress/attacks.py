"""Attacks that are valid for integer (quantized) models.

An int8 model is piecewise constant in its input: its exact gradient is zero almost everywhere, so
a white-box attack that differentiates it as written finds nothing and the model merely *looks*
robust. :func:`integer_robustness` attacks a quantized variant four ways, scores every candidate
on the real integer model, and keeps the worst case per sample:

* ``whitebox``: PGD through the differentiable surrogate (fake quantization with straight-through
  rounding: BPDA), forward values from the integer model (:class:`~.quantize.QuantizedNet`);
* ``exact``: the same PGD with the integer model's own (zero) gradient -- what a naive tool reports;
* ``transfer``: the full-precision base model's PGD examples, replayed on the variant;
* ``square``: the black-box Square attack on the variant (forward passes only).

Shapes: x (N, C, H, W) in the model's bounds, y (N,) -> per-sample robust flags (N,) bool.

References: Athalye et al., "Obfuscated Gradients Give a False Sense of Security", ICML 2018 (BPDA);
Andriushchenko et al., ECCV 2020 (Square); Madry et al., ICLR 2018 (PGD). Checked against the
integer model's own predictions (tests/test_compress_attacks.py).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import nn

from ..attacks.pgd import PGD
from ..attacks.square import Square
from .quantize import GradientMode, QuantizedNet

#: the ways of attacking, in report order
WAYS = ("whitebox", "exact", "transfer", "square")


@dataclass(frozen=True)
class IntegerRobustness:
    """Per-sample flags (N,) of one variant at one ``eps``: ``clean`` correct, and robust under each way
    of attacking; ``worst`` is robust under all of them (every candidate scored on the integer model)."""

    eps: float
    clean: torch.Tensor
    robust: dict[str, torch.Tensor]

    @property
    def worst(self) -> torch.Tensor:
        out = self.clean.clone()
        for flags in self.robust.values():
            out &= flags
        return out

    def accuracy(self, way: str) -> float:
        flags = self.worst if way == "worst" else self.robust[way]
        return float(flags.float().mean()) if flags.numel() else float("nan")


@contextmanager
def gradient_mode(model: nn.Module, mode: GradientMode) -> Iterator[None]:
    """Temporarily set the gradient mode of every :class:`QuantizedNet` inside ``model``."""
    nets = [m for m in model.modules() if isinstance(m, QuantizedNet)]
    old = [m.gradient for m in nets]
    for m in nets:
        m.gradient = mode
    try:
        yield
    finally:
        for m, g in zip(nets, old):
            m.gradient = g


def _predict(model: nn.Module, x: torch.Tensor, batch: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i:i + batch]).argmax(1) for i in range(0, x.shape[0], batch)]) if x.shape[0] else torch.zeros(0, dtype=torch.long)


def integer_robustness(
    variant: nn.Module,
    base: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    *,
    seeds: Sequence[int],
    steps: int = 20,
    restarts: int = 1,
    square_queries: int = 1000,
    batch_size: int = 128,
    whitebox_gradient: GradientMode = GradientMode.BPDA,
) -> IntegerRobustness:
    """Robust flags of ``variant`` under the four ways (see the module docstring); ``base`` is the
    full-precision model whose adversarial examples are transferred. ``seeds``: one per sample.
    ``steps``, ``restarts``: of each PGD way; ``square_queries``: of the Square attack.
    ``whitebox_gradient``: the gradient of the ``whitebox`` way (``EXACT`` reproduces a naive tool)."""
    pgd = PGD(steps=steps, rel_stepsize=2.5 / steps, restarts=restarts)  # Madry et al.'s 2.5 eps / steps: the iterates can cross the whole ball
    square = Square(n_queries=square_queries, max_rows=batch_size)  # look-ahead rows within the batch
    clean = _predict(variant, x, batch_size) == y
    robust: dict[str, torch.Tensor] = {}

    def attacked(model: nn.Module, attack: PGD | Square, target: nn.Module) -> torch.Tensor:
        flags = []
        for i in range(0, x.shape[0], batch_size):
            xa = attack(model, x[i:i + batch_size], y[i:i + batch_size], eps, seeds=list(seeds[i:i + batch_size]))
            flags.append(_predict(target, xa, batch_size) == y[i:i + batch_size])  # re-verified on the integer model
        return torch.cat(flags) if flags else torch.zeros(0, dtype=torch.bool)

    with gradient_mode(variant, whitebox_gradient):
        robust["whitebox"] = attacked(variant, pgd, variant)
    with gradient_mode(variant, GradientMode.EXACT):
        robust["exact"] = attacked(variant, pgd, variant)
    robust["transfer"] = attacked(base, pgd, variant)
    robust["square"] = attacked(variant, square, variant)
    return IntegerRobustness(float(eps), clean, robust)


__all__ = ["IntegerRobustness", "WAYS", "gradient_mode", "integer_robustness"]
