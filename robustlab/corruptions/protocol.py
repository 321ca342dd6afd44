"""How robustlab applies the ImageNet-C corruptions to images of any size and channel count.

Both backends (``reference`` and ``fast``) go through the same two steps, so that they agree:

* **Native size, ImageNet-C definitions.** Images whose sides are both at least 32 pixels are
  corrupted at their own size with the ``imagecorruptions`` (ImageNet-C) constants. Several
  corruptions scale with the image (elastic sigma, fog's fractal size, frost crop) and others use
  absolute pixel sizes (motion blur length, defocus radius), exactly as the reference does. Note that
  this is *not* CIFAR-10-C: CIFAR-10-C was rendered by a separate 32x32 re-parametrisation of the
  ImageNet-C code with milder constants for most corruptions, so accuracies of 32x32 images
  corrupted on the fly are lower than, and not comparable with, published CIFAR-10-C numbers. For
  those, evaluate on the saved CIFAR-10-C files (check parameter ``precomputed``), as their authors
  recommend.
* **Small images** (a side below 32 pixels, e.g. 8x8 digits): ``imagecorruptions`` refuses them.
  They are upsampled by the smallest integer factor k with min(H, W) * k >= 32 (nearest neighbour,
  each pixel becomes a k x k block), corrupted at that size, and averaged back over the k x k
  blocks (exact inverse for corruptions that do nothing). Non-square images keep their aspect.
* **Grey images** (C = 1) are replicated to RGB, corrupted as RGB, and converted back with ITU-R
  BT.601 luma (0.299 R + 0.587 G + 0.114 B), which is what the reference's own grey code paths do
  for colour overlays (frost, spatter). For the four noise corruptions, whose noise is drawn
  independently per channel, the first channel is kept instead, so that a grey image receives noise
  of the stated strength (luma would average three noises and weaken it by a third).

References: ``imagecorruptions.corrupt`` (refuses sides below 32 px; replicates grey to RGB);
Hendrycks' ``make_cifar_c.py`` (the CIFAR-10-C re-parametrisation this module does NOT apply).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

MIN_SIDE = 32
CHANNELWISE_NOISE = frozenset({"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"})
LUMA = (0.299, 0.587, 0.114)


@dataclass(frozen=True)
class Geometry:
    """How an input batch was mapped to the working (RGB, >= 32 px) batch."""

    channels: int
    factor: int


def upscale_factor(height: int, width: int) -> int:
    """Smallest integer k with min(height, width) * k >= 32 (1 for images already large enough)."""
    side = min(height, width)
    return 1 if side >= MIN_SIDE else math.ceil(MIN_SIDE / max(side, 1))


def to_working(x: torch.Tensor) -> tuple[torch.Tensor, Geometry]:
    """(N, C, H, W) in [0, 1] with C in {1, 3} -> (N, 3, kH, kW) working batch and its geometry."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"corruptions take (N, C, H, W) images with C = 1 or 3, got shape {tuple(x.shape)}")
    c = int(x.shape[1])
    k = upscale_factor(int(x.shape[2]), int(x.shape[3]))
    if c == 1:
        x = x.expand(-1, 3, -1, -1)
    if k > 1:
        x = x.repeat_interleave(k, dim=2).repeat_interleave(k, dim=3)
    return x.contiguous(), Geometry(channels=c, factor=k)


def from_working(y: torch.Tensor, name: str, geometry: Geometry) -> torch.Tensor:
    """Inverse of :func:`to_working` for a corrupted working batch (see the module docstring)."""
    if geometry.factor > 1:
        y = F.avg_pool2d(y, geometry.factor)
    if geometry.channels == 1:
        if name in CHANNELWISE_NOISE:
            y = y[:, :1]
        else:
            y = LUMA[0] * y[:, 0:1] + LUMA[1] * y[:, 1:2] + LUMA[2] * y[:, 2:3]
    return y.clamp(0.0, 1.0).contiguous()
