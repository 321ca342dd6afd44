"""Fog (Hendrycks & Dietterich 2019), batched torch version.

The reference (``imagecorruptions`` 1.1.2) adds ``a * plasma`` to the image, where ``plasma`` is a
diamond-square fractal of side ``next_power_of_2(max(H, W, 3))`` (the 3 is the channel count the
reference sees), normalised to [0, 1] over the whole map and cropped to the top-left ``H x W``; then
it rescales by ``max(x) / (max(x) + a)`` (``max`` over the whole image) and clips.

Here the diamond-square recursion runs on the whole batch at once (one (N, m, m) array, the same
roll/stride arithmetic as the reference), fed by one vector of ``U[0, 1)`` numbers per image whose
layout is exactly the order in which numpy draws them in the reference (per level: the square step,
then the two diamond steps). Given numpy's numbers, the map equals the reference's to float32
precision (tested); the map scale (``wibble`` starting at 100 and divided by ``decay`` per level)
and the blend weights are the reference's.

Deviations from the reference:
  * randomness: the numbers of image ``i`` come from ``torch.Generator().manual_seed(seeds[i])``
    (same distribution, different numbers);
  * float32 instead of float64 for the map (relative error around 1e-6 before the [0, 1]
    normalisation), float input and output instead of uint8 (the reference truncates its output
    to uint8: mean shift of about -0.5/255 that we do not add);
  * grey images are processed as one channel (the reference stacks them to RGB: same values).

References: Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions
and Perturbations", ICLR 2019; diamond-square after FLHerne/mapgen; checked against
``imagecorruptions`` 1.1.2 (bethgelab).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from ..registry import FAST_CORRUPTIONS
from ._ops import check_input, per_image

# (a, wibble decay) per severity
PARAMS: tuple[tuple[float, float], ...] = ((1.5, 2.0), (2.0, 2.0), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))


def next_power_of_2(n: int) -> int:
    return 1 if n == 0 else 2 ** (n - 1).bit_length()


def plasma_draws(mapsize: int) -> int:
    """How many uniform numbers one plasma map of side ``mapsize`` consumes."""
    total, step = 0, mapsize
    while step >= 2:
        total += 3 * (mapsize // step) ** 2
        step //= 2
    return total


def plasma_fractal(u: Tensor, mapsize: int, decay: float) -> Tensor:
    """Batched diamond-square height maps, normalised to [0, 1] per map.

    Args:
        u: (N, plasma_draws(mapsize)) uniforms in [0, 1), in the reference's draw order; the maps
            are computed on ``u``'s device and dtype.
        mapsize: side of the map, a power of two.
        decay: ``wibbledecay``; the noise amplitude starts at 100 and is divided by it per level.
    Returns:
        (N, mapsize, mapsize) tensor in [0, 1].
    """
    assert mapsize & (mapsize - 1) == 0, "mapsize must be a power of two"
    n = u.shape[0]
    m = torch.zeros((n, mapsize, mapsize), dtype=u.dtype, device=u.device)
    step, wibble, pos = mapsize, 100.0, 0

    def wibbled(acc: Tensor) -> Tensor:
        nonlocal pos
        k = acc.shape[1] * acc.shape[2]
        r = u[:, pos : pos + k].reshape(acc.shape)
        pos += k
        return acc / 4 + wibble * (-wibble + 2 * wibble * r)

    while step >= 2:
        half = step // 2
        # squares
        corner = m[:, 0:mapsize:step, 0:mapsize:step]
        acc = corner + torch.roll(corner, shifts=-1, dims=1)
        acc = acc + torch.roll(acc, shifts=-1, dims=2)
        m[:, half:mapsize:step, half:mapsize:step] = wibbled(acc)
        # diamonds
        dr = m[:, half:mapsize:step, half:mapsize:step]
        ul = m[:, 0:mapsize:step, 0:mapsize:step]
        lt = dr + torch.roll(dr, 1, dims=1) + ul + torch.roll(ul, -1, dims=2)
        m[:, 0:mapsize:step, half:mapsize:step] = wibbled(lt)
        tt = dr + torch.roll(dr, 1, dims=2) + ul + torch.roll(ul, -1, dims=1)
        m[:, half:mapsize:step, 0:mapsize:step] = wibbled(tt)
        step //= 2
        wibble /= decay
    m = m - m.amin(dim=(1, 2), keepdim=True)
    return m / m.amax(dim=(1, 2), keepdim=True)


def draw_uniforms(seeds: Sequence[int], count: int) -> Tensor:
    """(N, count) float32 ``U[0, 1)`` numbers, row i from a generator seeded with ``seeds[i]`` (CPU)."""
    return per_image(seeds, lambda g: torch.rand(count, generator=g))


def fog_with_uniforms(x: Tensor, severity: int, u: Tensor, *, params: tuple[float, float] | None = None) -> Tensor:
    """Fog with explicit plasma uniforms ``u`` (N, plasma_draws(mapsize)) (see :func:`plasma_fractal`);
    ``params`` (a, decay) replaces ``PARAMS[severity - 1]`` (another protocol's constants)."""
    a, decay = params or PARAMS[severity - 1]
    h, w = x.shape[-2:]
    mapsize = next_power_of_2(max(h, w, 3))
    plasma = plasma_fractal(u.to(device=x.device, dtype=torch.float32), mapsize, decay)[:, None, :h, :w]
    max_val = x.amax(dim=(1, 2, 3), keepdim=True)
    out = x + a * plasma.to(x.dtype)
    return out.mul_(max_val / (max_val + a)).clamp_(0.0, 1.0)


@FAST_CORRUPTIONS.register("fog")
def fog(x: Tensor, severity: int, seeds: Sequence[int]) -> Tensor:
    """Add a plasma-fractal fog layer and compress the range.

    Args:
        x: (N, C, H, W) float in [0, 1], C in {1, 3}, any device, any H, W.
        severity: 1..5, (a, decay) = (1.5, 2), (2, 2), (2.5, 1.7), (2.5, 1.5), (3, 1.4).
        seeds: N integers; the fog of image i depends only on ``seeds[i]``.
    Returns:
        (N, C, H, W) tensor, same dtype and device, in [0, 1].

    References: Hendrycks & Dietterich, ICLR 2019; ``imagecorruptions`` 1.1.2 ``fog``.
    """
    s = check_input(x, severity, seeds) + 1
    if x.shape[0] == 0:
        return x.clone()
    mapsize = next_power_of_2(max(x.shape[-2], x.shape[-1], 3))
    return fog_with_uniforms(x, s, draw_uniforms(seeds, plasma_draws(mapsize)))


__all__ = ["fog", "fog_with_uniforms", "plasma_fractal", "plasma_draws", "draw_uniforms", "next_power_of_2"]
