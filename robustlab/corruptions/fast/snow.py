"""Snow (Hendrycks & Dietterich 2019), batched torch version.

The reference (``imagecorruptions`` 1.1.2) draws a Gaussian snow layer ``N(loc, scale)`` of size
``H x W``, zooms its centre by ``zoom`` (``clipped_zoom``: crop ``ceil(H / zoom)`` rows and columns,
``scipy.ndimage.zoom(order=1)`` to ``round(ceil(H / zoom) * zoom)``, which can exceed ``H``), zeroes
values below ``threshold``, clips to [0, 1], motion-blurs the whole zoomed layer (the same
``_motion_blur`` as motion blur, angle ``U(-135, -45)`` degrees), rounds it to 1/255 steps and crops
it to ``H x W``. The image is whitened as ``b x + (1 - b) max(x, 1.5 gray(x) + 0.5)`` (``gray``: ITU-R
601 luma, as ``cv2.COLOR_RGB2GRAY``) and the snow layer plus its 180-degree rotation is added.

Here every step is batched: the zoom is ``F.interpolate(bilinear, align_corners=True)``, which is
scipy's order-1 zoom with ``grid_mode=False`` (output pixel ``o`` samples input ``o (n-1)/(m-1)``);
the blur uses :func:`robustlab.corruptions.fast.motion_blur.shift_sum` with per-image angles. Given
numpy's normal numbers and angle, the output equals the reference's up to float rounding (tested).

Deviations from the reference:
  * randomness: the layer and angle of image ``i`` come from ``torch.Generator().manual_seed(seeds[i])``
    (same distributions, different numbers);
  * float input and output instead of uint8 (the reference truncates its output to uint8: a mean
    shift of about -0.5/255 that we do not add);
  * grey images (C = 1) use ``gray(x) = x``, which is what the reference computes on the RGB stack
    of a grey image.

References: Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions
and Perturbations", ICLR 2019; checked against ``imagecorruptions`` 1.1.2 (bethgelab).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..registry import FAST_CORRUPTIONS
from ._ops import check_input, per_image, rgb_to_grey
from .motion_blur import motion_taps, shift_sum

# (loc, scale, zoom, threshold, blur radius, blur sigma, blend) per severity
PARAMS: tuple[tuple[float, float, float, float, int, float, float], ...] = (
    (0.1, 0.3, 3.0, 0.5, 10, 4.0, 0.8),
    (0.2, 0.3, 2.0, 0.5, 12, 4.0, 0.7),
    (0.55, 0.3, 4.0, 0.9, 12, 8.0, 0.7),
    (0.55, 0.3, 4.5, 0.85, 12, 8.0, 0.65),
    (0.55, 0.3, 2.5, 0.85, 12, 12.0, 0.55),
)
LUMA = (0.299, 0.587, 0.114)


def clipped_zoom(layer: Tensor, zoom: float) -> Tensor:
    """Centre crop and bilinear zoom as the reference's ``clipped_zoom`` (not cropped back).

    Args:
        layer: (N, C, H, W) float. zoom: factor > 1.
    Returns:
        (N, C, round(ceil(H / zoom) * zoom), round(ceil(W / zoom) * zoom)) tensor.
    """
    h, w = layer.shape[-2:]
    ch0, ch1 = int(math.ceil(h / zoom)), int(math.ceil(w / zoom))
    top0, top1 = (h - ch0) // 2, (w - ch1) // 2
    crop = layer[..., top0 : top0 + ch0, top1 : top1 + ch1]
    out_h, out_w = int(round(ch0 * zoom)), int(round(ch1 * zoom))  # scipy uses Python's round
    return F.interpolate(crop, size=(out_h, out_w), mode="bilinear", align_corners=True)


def gray(x: Tensor) -> Tensor:
    """(N, 1, H, W) BT.601 luma of (N, C, H, W) images (the image itself when C = 1)."""
    return x if x.shape[1] == 1 else rgb_to_grey(x, LUMA)


def snow_with_draws(x: Tensor, severity: int, normals: Tensor, angles: Tensor, *, params: tuple[float, float, float, float, int, float, float] | None = None) -> Tensor:
    """Snow with explicit random numbers.

    Args:
        x: (N, C, H, W) float in [0, 1].
        normals: (N, H, W) standard normal numbers (the snow layer before ``loc + scale * z``).
        angles: (N,) blur angles in degrees, float64.
        params: replaces ``PARAMS[severity - 1]`` (another protocol's constants).
    Returns:
        (N, C, H, W) corrupted images in [0, 1].
    """
    loc, scale, zoom, thr, radius, sigma, blend = params or PARAMS[severity - 1]
    h, w = x.shape[-2:]
    layer = loc + scale * normals.to(device=x.device, dtype=x.dtype)[:, None]
    layer = clipped_zoom(layer, zoom)
    layer = torch.where(layer < thr, torch.zeros_like(layer), layer).clamp_(0.0, 1.0)
    dy, dx, wts = motion_taps(angles, radius, sigma, layer.shape[-2], layer.shape[-1])
    layer = shift_sum(layer, dy, dx, wts)
    layer = torch.round(layer * 255.0) / 255.0
    layer = layer[..., :h, :w]  # the zoomed layer is never smaller: round(ceil(h / z) * z) >= h
    whitened = blend * x + (1 - blend) * torch.maximum(x, gray(x) * 1.5 + 0.5)
    return (whitened + layer + torch.flip(layer, dims=(-2, -1))).clamp_(0.0, 1.0)


def draw_snow(seeds: Sequence[int], height: int, width: int) -> tuple[Tensor, Tensor]:
    """Per image (H, W) standard normals, then one ``U(-135, -45)`` angle, from ``seeds[i]`` (CPU).

    Returns (N, H, W) float32 normals and (N,) float64 angles in degrees.
    """

    def draw(g: torch.Generator) -> Tensor:
        z = torch.randn(height * width, generator=g, dtype=torch.float64)
        return torch.cat([z, torch.rand(1, generator=g, dtype=torch.float64)])

    both = per_image(seeds, draw)
    normals = both[:, :-1].reshape(-1, height, width).to(torch.float32)
    return normals, -135.0 + 90.0 * both[:, -1]


@FAST_CORRUPTIONS.register("snow")
def snow(x: Tensor, severity: int, seeds: Sequence[int]) -> Tensor:
    """Falling snow: a zoomed, thresholded, motion-blurred noise layer over a whitened image.

    Args:
        x: (N, C, H, W) float in [0, 1], C in {1, 3}, any device, any H, W.
        severity: 1..5 (see ``PARAMS``: loc, scale, zoom, threshold, radius, sigma, blend).
        seeds: N integers; the snow of image i depends only on ``seeds[i]``.
    Returns:
        (N, C, H, W) tensor, same dtype and device, in [0, 1].

    References: Hendrycks & Dietterich, ICLR 2019; ``imagecorruptions`` 1.1.2 ``snow``.
    """
    s = check_input(x, severity, seeds) + 1
    if x.shape[0] == 0:
        return x.clone()
    normals, angles = draw_snow(seeds, x.shape[-2], x.shape[-1])
    return snow_with_draws(x, s, normals, angles)


__all__ = ["snow", "snow_with_draws", "clipped_zoom", "draw_snow", "gray"]
