"""Deterministic per-sample randomness.

Every random draw in robustlab is seeded from (run seed, check id, sample id, ...) through a hash, so
results do not depend on the batch size, the order of batches, or the number of processes.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts, stable across processes and platforms."""
    h = hashlib.blake2b("\x1f".join(str(p) for p in parts).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)


def sample_seeds(seed: int, scope: str, ids: Sequence[str]) -> list[int]:
    """One seed per sample id for a given scope (e.g. ``"pgd_linf/eps=0.03"``)."""
    return [derive_seed(seed, scope, i) for i in ids]


def reseed_model_rng(*parts: object) -> None:
    """Seed torch's global generators (CPU and every GPU) from ``parts``.

    robustlab's own draws use their own generators; this is for the model's: a network that draws
    random numbers in its forward (dropout left in training mode, noise layers, randomised defenses)
    uses the global generator. Reseeded at the start of every check and of every stored batch, the
    scorecard is the same for the same seed, and a resumed run's batches draw what they would have
    drawn in an uninterrupted run."""
    import torch

    torch.manual_seed(derive_seed("model-rng", *parts))


def numpy_rng(*parts: object) -> np.random.Generator:
    return np.random.default_rng(derive_seed(*parts))


def torch_generator(*parts: object, device: "str | torch.device" = "cpu") -> "torch.Generator":
    import torch

    g = torch.Generator(device=str(device))
    g.manual_seed(derive_seed(*parts))
    return g


def per_sample_noise(
    seeds: Sequence[int], shape: Sequence[int], *, kind: str = "normal", device: "torch.device | str" = "cpu", dtype: "torch.dtype | None" = None
) -> "torch.Tensor":
    """Stack of per-sample noise tensors, each drawn from its own seeded generator.

    Args:
        seeds: one seed per sample (N).
        shape: shape of one sample's noise, e.g. (C, H, W).
        kind: ``normal`` (N(0,1)) or ``uniform`` (U[0,1)).
    Returns:
        (N, *shape) tensor on ``device``. The noise of sample i depends only on ``seeds[i]``.
    """
    import torch

    dt = dtype or torch.float32
    size = [int(v) for v in shape]
    out = torch.empty([len(seeds), *size], dtype=dt)
    g = torch.Generator()
    for i, s in enumerate(seeds):
        g.manual_seed(int(s))
        if kind == "normal":
            out[i] = torch.randn(size, generator=g, dtype=dt)
        elif kind == "uniform":
            out[i] = torch.rand(size, generator=g, dtype=dt)
        else:
            raise ValueError(f"unknown noise kind {kind!r}")
    return out.to(device)
