"""Glass blur (Hendrycks & Dietterich 2019), batched torch version.

The reference (``imagecorruptions`` 1.1.2) blurs with a Gaussian, truncates to uint8, then, for each
of ``iterations`` passes, visits the pixels ``(h, w)`` for ``h = H-d .. d+1`` and ``w = W-d .. d+1``
(both descending, row-major), draws ``dx, dy ~ randint(-d, d)`` (i.e. in ``[-d, d-1]``) and runs
``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` with ``(h', w') = (h + dy, w + dx)``; finally it blurs
again. On numpy arrays that statement is *not* a swap: the right-hand side holds views, so pixel
``(h, w)`` receives the value of ``(h', w')`` and ``(h', w')`` keeps its own value (a copy, which
duplicates and drops pixels). We reproduce that behaviour, since it defines the benchmark. The loop is
sequential Python (about 1.4 s for one 224x224 image).

How it is vectorised, exactly: number the steps ``q = k P + j`` (pass ``k``, position ``j`` in the
reference's loop order, ``P = (H-2d)(W-2d)``). Step ``q`` writes to its centre ``c_q`` the value that
its partner ``p_q`` holds at that moment, which is the value written by the latest earlier step
centred on ``p_q`` -- ``prev(q) = k P + j(p_q)`` if ``j(p_q) < j`` (same pass), else the same position
in the previous pass -- or, if there is none (first pass, or ``p_q`` outside the visited region), the
original pixel ``p_q``. So each step points to at most one earlier step, and the value of a step is
the original pixel at the end of its chain of pointers. All chains are resolved at once by pointer
doubling (``ptr = ptr[ptr]`` until nothing changes: ``log2`` of the longest chain rounds, about 6
for 224x224), over the whole batch. This gives *the same result* as the sequential loop for the same
random offsets: the tests compare it with a direct Python loop, and, fed numpy's offsets, with the
reference pixel for pixel (equal up to float rounding: values differ by 1/255 on under 2% of pixels,
by 2/255 on about 1e-5 of them, because the first uint8 truncation of flat regions depends on
float64 vs float32 rounding). The
index map is built on the CPU (integer bookkeeping, identical on every device, in chunks of images
to bound memory) and applied on the images' device with one gather.

The Gaussian blurs follow ``skimage.filters.gaussian`` (scipy ``gaussian_filter``: radius
``int(4 sigma + 0.5)``, ``mode='nearest'``), computed as sums of shifted slices; the intermediate
uint8 truncation is reproduced as ``floor(255 b) / 255``.

Deviations from the reference:
  * randomness: offsets for image ``i`` come from ``torch.Generator().manual_seed(seeds[i])``
    (``randint(-d, d)``, same distribution as numpy's, different numbers);
  * the input is float in [0, 1], not uint8, and the output is not truncated to uint8 (the
    reference's final ``np.uint8`` adds a mean shift of about -0.5/255);
  * grey images are processed as one channel (the reference stacks them to RGB: same values).

References: Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions
and Perturbations", ICLR 2019; checked against ``imagecorruptions`` 1.1.2 (bethgelab).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import torch
from torch import Tensor

from ..registry import FAST_CORRUPTIONS
from ._ops import check_input, gaussian_kernel1d, per_image

# (sigma, max_delta d, iterations) per severity
PARAMS: tuple[tuple[float, int, int], ...] = ((0.7, 1, 2), (0.9, 2, 1), (1.0, 2, 3), (1.1, 3, 2), (1.5, 4, 2))


def pad_edges(x: Tensor, r: int, dim: int) -> Tensor:
    """Replicate the first and last slice of ``dim`` ``r`` times on each side (any r, any size)."""
    if r == 0:
        return x
    n = x.shape[dim]
    first = x.narrow(dim, 0, 1).expand(*[r if d == dim % x.ndim else -1 for d in range(x.ndim)])
    last = x.narrow(dim, n - 1, 1).expand(*[r if d == dim % x.ndim else -1 for d in range(x.ndim)])
    return torch.cat([first, x, last], dim=dim)


def gaussian_blur_nearest(x: Tensor, sigma: float) -> Tensor:
    """``skimage.filters.gaussian(x, sigma)`` per channel (scipy kernel, ``mode='nearest'``).

    Separable, each pass a sum of shifted slices (on CPU this is about 15x faster than a 1xK
    ``conv2d`` on single-channel planes). x: (..., H, W) float; returns the same shape.
    """
    k = [float(v) for v in gaussian_kernel1d(sigma)]
    r = (len(k) - 1) // 2
    h, w = x.shape[-2:]
    y = pad_edges(x, r, -1)
    out = y[..., 0:w] * k[0]
    for i in range(1, len(k)):
        out.add_(y[..., i : i + w], alpha=k[i])
    y = pad_edges(out, r, -2)
    out = y[..., 0:h, :] * k[0]
    for i in range(1, len(k)):
        out.add_(y[..., i : i + h, :], alpha=k[i])
    return out


@lru_cache(maxsize=32)
def _centres(height: int, width: int, d: int) -> tuple[Tensor, Tensor]:
    """Flat pixel index of the reference's loop positions in loop order (P,), and the inverse map
    pixel -> loop position (H * W,), ``-1`` for pixels the loop never visits."""
    hh = torch.arange(height - d, d, -1)
    ww = torch.arange(width - d, d, -1)
    centre = (hh[:, None] * width + ww[None, :]).flatten()
    order = torch.full((height * width,), -1, dtype=torch.int64)
    order[centre] = torch.arange(centre.numel())
    return centre, order


_CHUNK = 1 << 18  # steps resolved at once (images x steps): keeps the index arrays small (cache)


def glass_permutation(height: int, width: int, d: int, offsets: Tensor) -> Tensor:
    """Source-pixel map produced by the reference's (copying) swap loop, for given random offsets.

    Args:
        height, width: image size; d: max_delta.
        offsets: (N, K * P, 2) integers for K passes, ``P = (height - 2d)(width - 2d)``; ``[..., 0]`` is
            dx and ``[..., 1]`` is dy of each step, in the reference's loop order (numpy's order).
    Returns:
        (N, height * width) int64 ``src`` such that the shuffled image is ``x.flatten(-2)[..., src]``
        (not a permutation: the reference copies pixels, so some indices repeat).
    """
    n = offsets.shape[0]
    ident = torch.arange(height * width, dtype=torch.int64).repeat(n, 1)
    p = max(height - 2 * d, 0) * max(width - 2 * d, 0)
    if p == 0 or n == 0:
        return ident
    passes = offsets.shape[1] // p
    centre, order = _centres(height, width, d)
    step = max(1, _CHUNK // (passes * p))
    for lo in range(0, n, step):
        ident[lo : lo + step, centre] = _resolve(offsets[lo : lo + step], centre, order, width, passes)
    return ident


def _resolve(offsets: Tensor, centre: Tensor, order: Tensor, width: int, passes: int) -> Tensor:
    """Values (source pixels) written by the last pass at each loop position: (n, P)."""
    n, p = offsets.shape[0], centre.numel()
    off = offsets.view(n, passes, p, 2).to(torch.int64)
    partner = off[..., 1] * width  # (n, K, P): the pixel each step reads
    partner += off[..., 0]
    partner += centre.view(1, 1, p)
    jp = order[partner]  # its loop position, -1 if the loop never writes it
    j_self = torch.arange(p).view(1, 1, p)
    k_p = (torch.arange(passes) * p).view(1, passes, 1)
    later = jp >= j_self  # not yet written in this pass: the previous pass wrote it (if any)
    ptr = jp + k_p
    ptr -= later * p
    terminal = (jp < 0) | (later & (k_p == 0))
    ptr = torch.where(terminal, k_p + j_self, ptr).view(n, passes * p)
    while True:  # pointer doubling: every step ends at the first step of its chain
        nxt = ptr.gather(1, ptr)
        if torch.equal(nxt, ptr):
            break
        ptr = nxt
    value = partner.view(n, passes * p).gather(1, ptr)  # the chain's first step reads an original pixel
    return value[:, (passes - 1) * p :]


def glass_blur_with_offsets(x: Tensor, severity: int, offsets: Tensor, *, params: tuple[float, int, int] | None = None) -> Tensor:
    """Glass blur with explicit swap offsets (N, P, 2) as described in :func:`glass_permutation`;
    ``params`` (sigma, max_delta, iterations) replaces this protocol's ``PARAMS[severity - 1]``."""
    sigma, d, _ = params or PARAMS[severity - 1]
    n, c, h, w = x.shape
    y = torch.floor(gaussian_blur_nearest(x, sigma) * 255.0) / 255.0
    perm = glass_permutation(h, w, d, offsets).to(x.device)
    y = y.reshape(n, c, h * w).gather(2, perm[:, None, :].expand(n, c, h * w)).reshape(n, c, h, w)
    return gaussian_blur_nearest(y, sigma).clamp_(0.0, 1.0)


def draw_offsets(seeds: Sequence[int], height: int, width: int, severity: int, *, params: tuple[float, int, int] | None = None) -> Tensor:
    """Per-image swap offsets ``randint(-d, d)`` of shape (N, P, 2) from ``seeds[i]`` (CPU, int8)."""
    _, d, iters = params or PARAMS[severity - 1]
    p = iters * max(height - 2 * d, 0) * max(width - 2 * d, 0)
    return per_image(seeds, lambda g: torch.randint(-d, d, (p, 2), generator=g, dtype=torch.int8))


@FAST_CORRUPTIONS.register("glass_blur")
def glass_blur(x: Tensor, severity: int, seeds: Sequence[int]) -> Tensor:
    """Gaussian blur, local pixel shuffling (as the reference does it), Gaussian blur again.

    Args:
        x: (N, C, H, W) float in [0, 1], C in {1, 3}, any device; any H, W (images with
            ``min(H, W) <= 2d`` are only blurred, as in the reference).
        severity: 1..5, (sigma, max_delta, iterations) = (0.7, 1, 2), (0.9, 2, 1), (1, 2, 3),
            (1.1, 3, 2), (1.5, 4, 2).
        seeds: N integers; the shuffle of image i depends only on ``seeds[i]``.
    Returns:
        (N, C, H, W) tensor, same dtype and device, in [0, 1].

    References: Hendrycks & Dietterich, ICLR 2019; ``imagecorruptions`` 1.1.2 ``glass_blur``.
    """
    s = check_input(x, severity, seeds) + 1
    if x.shape[0] == 0:
        return x.clone()
    return glass_blur_with_offsets(x, s, draw_offsets(seeds, x.shape[-2], x.shape[-1], s))


__all__ = [
    "glass_blur", "glass_blur_with_offsets", "glass_permutation", "draw_offsets", "gaussian_blur_nearest", "pad_edges",
]
