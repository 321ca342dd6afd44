"""Shot (Poisson) noise: ``clip(Poisson(c x) / c)`` per pixel and channel, c = 60 25 12 5 3.

(``cifar-c`` calls :func:`poisson_photons` with c = 500 250 100 75 50.) Every value is a Poisson(c x)
draw for the input value x itself (the reference's final 8-bit flooring is not applied); image i's
draws come from a CPU ``torch.Generator`` seeded with ``seeds[i]`` only, so a result never depends
on the batch it is in, and are moved to the input's device. Two samplers, chosen per image:

* **8-bit images** (every value equals ``k / 255`` as the input's dtype holds it, k = 0..255: what
  npz, PNG and JPEG data give): inverse-CDF sampling. The rate takes at most 256 values c x_k, so a
  float64 CDF table per level is built once per (c, dtype), with ``scipy.special.pdtr`` below the
  rate and ``1 - pdtrc`` above it (Poisson CDF and survival function). Each value draws one
  uniform u (``torch.rand`` in float64: a multiple of 2^-53 in [0, 1)) and its count is the
  smallest n with CDF(n) > u, found through a guide table of 2048 buckets per level and, in the
  few buckets that hold a CDF step, a binary search. The CDF entries are rounded up to multiples
  of 2^-53, so P(count <= n) equals the table entry exactly: the sampler is exact up to that
  rounding (< 2^-53) and scipy's. Each row ends at the first n whose float64 CDF is 1.0, where
  P(X > n) < 2^-53; that remaining mass goes to n. Cost: one uniform and a table look-up per
  value (about half of ``torch.poisson``'s on CPU; the uniforms are most of it).
* **Any other image** (other quantisations, resized or float data): ``torch.poisson`` per image on
  ``c x`` in float32 (PyTorch's exact samplers), one call per image.

The two samplers give different numbers for the same seed (same distribution); before the table
sampler, every image used ``torch.poisson``, so 8-bit images now get other numbers than then.

References: Hendrycks & Dietterich 2019; ``imagecorruptions.shot_noise``; Devroye 1986, ch. III.2
(inversion by guide tables, after Chen & Asau 1974).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

from ..registry import FAST_CORRUPTIONS
from ._ops import check_input

PHOTONS = (60.0, 25.0, 12.0, 5.0, 3.0)

LEVELS = 256  #: 8-bit images: values k / 255
_UBITS = 53  #: bits of a float64 uniform from ``torch.rand``
_GUIDE_BITS = 11  #: 2048 guide buckets per level
_SEED_MASK = (1 << 63) - 1
_CHUNK_PIXELS = 1 << 22  #: table lookups run on at most this many values at a time


@FAST_CORRUPTIONS.register("shot_noise")
def shot_noise(x: torch.Tensor, severity: int, seeds: Sequence[int]) -> torch.Tensor:
    """(N, C, H, W) in [0, 1] -> same shape; counts of image i drawn from ``seeds[i]`` only."""
    return poisson_photons(x, float(PHOTONS[check_input(x, severity, seeds)]), seeds)


def poisson_photons(x: torch.Tensor, c: float, seeds: Sequence[int]) -> torch.Tensor:
    """``clip(Poisson(c x) / c)`` of (N, C, H, W) ``x``, image i's counts drawn from ``seeds[i]`` only.

    8-bit images use the inverse-CDF table sampler, others ``torch.poisson`` (module docstring).
    Both run on the CPU; the result is moved to ``x``'s device.
    """
    xc = x.detach().cpu()
    n = int(xc.shape[0])
    on_grid = [False] * n
    scaled = xc
    if xc.is_floating_point() and n:
        scaled = (xc * (LEVELS - 1)).round_()
        on_grid = (scaled / (LEVELS - 1) == xc).flatten(1).all(dim=1).tolist()
    grid = [i for i in range(n) if on_grid[i]]
    other = [i for i in range(n) if not on_grid[i]]
    if grid and not other:
        return _table_sample(scaled, c, xc.dtype, seeds).to(device=x.device, dtype=x.dtype)
    counts = torch.empty(xc.shape, dtype=torch.float32)
    rate = (xc[other].float() * c).clamp_min(0.0)
    g = torch.Generator()
    for j, i in enumerate(other):
        g.manual_seed(int(seeds[i]) & _SEED_MASK)
        rate[j] = torch.poisson(rate[j], generator=g)
    counts[other] = rate
    out = (counts.to(x.dtype) / c).clamp(0.0, 1.0)
    if grid:
        out[grid] = _table_sample(scaled[grid], c, xc.dtype, [seeds[i] for i in grid]).to(x.dtype)
    return out.to(x.device)


def level_values(dtype: torch.dtype) -> torch.Tensor:
    """(256,) the 8-bit values k / 255 as ``dtype`` holds them (the test :func:`poisson_photons` applies)."""
    return torch.arange(LEVELS).to(dtype) / (LEVELS - 1)


@lru_cache(maxsize=64)
def cdf_tables(c: float, dtype: torch.dtype) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Inverse-CDF tables of Poisson(c x_k), x_k = :func:`level_values` (k = 0..255), for ``dtype`` input.

    * ``cdf`` (256, M) float64: CDF_k(n) rounded up to a multiple of 2^-53 (so exact in float64 and
      compared exactly with the 53-bit uniforms), non-decreasing along n, every row ending in 1.0;
    * ``values`` (M,): the output ``clip(n / c, 0, 1)`` of count n, computed as the fallback does;
    * ``guide`` (256 * 2048,): for a uniform u in bucket [b, b + 1) / 2048 of level k (entry
      ``k * 2048 + b``) the output value of its count (the smallest n with ``cdf[k, n] > u``) when
      the whole bucket has one count, else ``-1 - j``: ``spans[j]`` holds the bucket's lowest and
      highest flat index ``k * M + n`` into ``cdf``, to search.
    """
    from scipy.special import pdtr, pdtrc  # Poisson CDF and survival function (what scipy.stats.poisson uses)

    rates = np.maximum(level_values(dtype).double().numpy() * float(c), 0.0)
    top = float(rates.max())
    width = int(top + 12.0 * np.sqrt(top) + 40.0)
    n = np.arange(width, dtype=np.float64)[None, :]
    lam = rates[:, None]
    cdf = np.where(n < lam, pdtr(n, lam), 1.0 - pdtrc(n, lam))
    cdf = np.maximum.accumulate(np.clip(cdf, 0.0, 1.0), axis=1)
    full = cdf >= 1.0
    if not bool(full[:, -1].all()):
        raise AssertionError(f"Poisson CDF table too short for rate {top}")
    width = int(full.argmax(axis=1).max()) + 1
    unit = 2.0**-_UBITS
    cdf = np.ceil(cdf[:, :width] / unit) * unit
    edges = np.arange((1 << _GUIDE_BITS) + 1, dtype=np.float64) / (1 << _GUIDE_BITS)
    below = np.stack([np.searchsorted(row, edges, side="right") for row in cdf])  # count at each edge
    lo = below[:, :-1].ravel()
    hi = np.minimum(below[:, 1:], width - 1).ravel()
    table_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    values = (torch.arange(width, dtype=torch.float32).to(dtype) / c).clamp(0.0, 1.0).to(table_dtype).numpy()
    split = np.flatnonzero(hi > lo)
    guide = values[lo]
    guide[split] = -1.0 - np.arange(split.size)
    offset = (split >> _GUIDE_BITS) * width
    spans = np.stack([offset + lo[split], offset + hi[split]], axis=1).astype(np.int64)
    return cdf, values, guide, spans


def _table_sample(scaled: torch.Tensor, c: float, dtype: torch.dtype, seeds: Sequence[int]) -> torch.Tensor:
    """``clip(Poisson(c x) / c)`` by table, for (n, C, H, W) ``scaled`` = 255 x with x on the 8-bit grid."""
    cdf, values, guide, spans = cdf_tables(float(c), dtype)
    flat_cdf = cdf.ravel()
    width = int(cdf.shape[1])
    shape = tuple(scaled.shape[1:])
    per = int(np.prod(shape))
    chunk = max(1, _CHUNK_PIXELS // max(per, 1))
    g = torch.Generator()
    out = np.empty(tuple(scaled.shape), dtype=guide.dtype)
    flat_out = out.reshape(-1)
    for start in range(0, int(scaled.shape[0]), chunk):
        part = seeds[start : start + chunk]
        u = torch.empty((len(part),) + shape, dtype=torch.float64)
        for j, s in enumerate(part):
            g.manual_seed(int(s) & _SEED_MASK)
            torch.rand(shape, generator=g, dtype=torch.float64, out=u[j])
        un = u.numpy().reshape(-1)
        key = (scaled[start : start + chunk].reshape(-1).to(torch.int64) << _GUIDE_BITS).numpy()
        key += (un * float(1 << _GUIDE_BITS)).astype(np.int64)  # the bucket (exact: power-of-two scale)
        got = guide.take(key)
        walk = np.flatnonzero(got < 0)
        if walk.size:
            got[walk] = values.take(_search(flat_cdf, spans.take(-1 - got[walk].astype(np.int64), axis=0), un[walk]) % width)
        flat_out[start * per : start * per + got.size] = got
    return torch.from_numpy(out)


def _search(flat_cdf: np.ndarray, spans: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Smallest i in [lo, hi] (``spans`` rows) with ``flat_cdf[i] > u`` (true at i = hi), elementwise."""
    lo, hi = spans[:, 0].copy(), spans[:, 1].copy()
    lo += flat_cdf.take(lo) <= u  # most split buckets hold one threshold: then lo == hi
    while True:
        open_ = np.flatnonzero(lo < hi)
        if not open_.size:
            return lo
        mid = (lo[open_] + hi[open_]) >> 1
        above = flat_cdf.take(mid) > u[open_]
        hi[open_] = np.where(above, mid, hi[open_])
        lo[open_] = np.where(above, lo[open_], mid + 1)
