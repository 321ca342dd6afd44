"""Pixelate: downscale to ``int(c * size)`` with Pillow's BOX filter, then upscale back with
NEAREST, c = .6 .5 .4 .3 .25.

Deterministic. The image is quantised to 8 bits and the BOX weights are computed as Pillow
computes them (box filter on (-0.5, 0.5] evaluated at input pixel centres, normalised, 22-bit
fixed point, horizontal pass then vertical pass, each rounded to 8 bits), and the
NEAREST upscale picks source pixel ``floor((j + 0.5) * n_small / n)`` (computed by the
same float accumulation as Pillow's affine walk, which decides exact ties). Done with integer tensor
arithmetic (exact in float64 matrix products), batched. This is bit-exact with the reference for images up to about twice as tall
as wide (checked at 32x32, 224x224 and several non-square sizes). For taller images Pillow 13
sometimes runs the vertical pass first (an internal heuristic we did not reproduce); the two
orders differ by at most one grey level.

References: Hendrycks & Dietterich 2019; ``imagecorruptions.pixelate``; Pillow ``Resample.c``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

from ..registry import FAST_CORRUPTIONS
from ._ops import check_input

FACTOR = (0.6, 0.5, 0.4, 0.3, 0.25)
_PRECISION_BITS = 32 - 8 - 2


@lru_cache(maxsize=128)
def box_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) int64 fixed-point weights of Pillow's BOX reduction along one axis."""
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    w = np.zeros((n_out, n_in), dtype=np.int64)
    for j in range(n_out):
        center = (j + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), n_in)
        ks = []
        for i in range(xmin, xmax):
            t = (i - center + 0.5) / filterscale
            ks.append(1.0 if -0.5 < t <= 0.5 else 0.0)
        total = sum(ks)
        for i, k in zip(range(xmin, xmax), ks):
            k = k / total if total else k
            w[j, i] = int(0.5 + k * (1 << _PRECISION_BITS)) if k >= 0 else int(-0.5 + k * (1 << _PRECISION_BITS))
    return w


@lru_cache(maxsize=128)
def nearest_index(n_small: int, n: int) -> np.ndarray:
    """Source index of each of the n output pixels of Pillow's NEAREST resize from n_small.

    Pillow walks an affine map, adding the scale to an accumulator that starts at scale / 2, and
    truncates; the float accumulation decides ties such as (j + 0.5) * scale landing on an integer.
    """
    scale = n_small / n
    out = np.empty(n, dtype=np.int64)
    acc = 0.0 + 0.0 * 0.5 + scale * 0.5
    for j in range(n):
        out[j] = min(max(int(acc), 0), n_small - 1)
        acc += scale
    return out


@lru_cache(maxsize=128)
def _nearest_matrix(n_small: int, n: int) -> np.ndarray:
    m = np.zeros((n, n_small))
    m[np.arange(n), nearest_index(n_small, n)] = 1.0
    return m


def box_pass(u: torch.Tensor, weights: np.ndarray, dim: int) -> torch.Tensor:
    """One Pillow pass on integer-valued float64 ``u`` along ``dim`` (2 = H, 3 = W); integers stay
    below 2**40, so the float64 products and sums are exact."""
    w = torch.as_tensor(weights, dtype=torch.float64, device=u.device)
    y = torch.matmul(u, w.transpose(0, 1)) if dim == u.ndim - 1 else torch.matmul(w, u)
    # in place (y is a fresh product); scaling by 2^-22 is exact, like the division it replaces
    y.add_(float(1 << (_PRECISION_BITS - 1))).mul_(1.0 / float(1 << _PRECISION_BITS)).floor_()
    return y.clamp_(0, 255)


@FAST_CORRUPTIONS.register("pixelate")
def pixelate(x: torch.Tensor, severity: int, seeds: Sequence[int]) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> same shape (``seeds`` unused: deterministic)."""
    c = FACTOR[check_input(x, severity, seeds)]
    h, w = int(x.shape[2]), int(x.shape[3])
    hs, ws = max(int(h * c), 1), max(int(w * c), 1)
    u = (x.detach().clamp(0.0, 1.0) * 255.0).round().to(torch.float64)
    u = box_pass(u, box_weights(w, ws), 3)
    u = box_pass(u, box_weights(h, hs), 2)
    small = u.to(x.dtype) / 255.0  # 8-bit levels are exact in float32
    nh = torch.as_tensor(_nearest_matrix(hs, h), dtype=x.dtype, device=x.device)
    nw = torch.as_tensor(_nearest_matrix(ws, w), dtype=x.dtype, device=x.device)
    return torch.matmul(torch.matmul(nh, small), nw.transpose(0, 1))  # one 1 per row: exact copies
