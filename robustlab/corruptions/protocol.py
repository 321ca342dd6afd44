"""Corruption protocols: which constants, at which resolution, for images of any size and channel count.

A protocol is chosen explicitly (check parameter ``protocol:``, ``robustlab corrupt --protocol``);
``auto`` resolves from the image size once, at the boundary (:func:`resolve`):

* ``imagenet-c`` (chosen by ``auto`` when both sides are >= 64 px): the ``imagecorruptions``
  (ImageNet-C) constants and procedures at the image's own size. Source: Hendrycks & Dietterich
  2019, ``imagecorruptions`` 1.1.2 (bethgelab).
* ``cifar-c`` (chosen by ``auto`` for 32x32 images; other sizes are refused): the constants and
  procedures of ``make_cifar_c.py`` (Hendrycks' ``robustness`` repository,
  ``ImageNet-C/create_c/make_cifar_c.py``), the script that rendered CIFAR-10-C / CIFAR-100-C, so
  that numbers sit beside RobustBench's corruption leaderboard. Its motion blur and snow used
  ImageMagick (Wand); both backends follow the NumPy re-implementation of ``imagecorruptions``.
* ``cifar-c-small`` (chosen by ``auto`` for every other size: 8x8 digits, 28x28 MNIST, 48x48 ...):
  the ``cifar-c`` constants. **Per-pixel corruptions** (:data:`POINTWISE`: the four noises,
  brightness, contrast, saturate) run at the image's native resolution, so their stated strength
  (noise sigma, flip fraction, brightness shift) is exactly the one of the constants. **Spatial
  corruptions** of images with both sides <= 32 run on a 32x32 canvas: each pixel becomes a k x k
  block (k = the largest integer with k H <= 32 and k W <= 32: 4 for 8x8, 1 for 28x28), the result
  is reflect-padded to 32x32, corrupted with the ``cifar-c`` procedure, cropped, and averaged back
  over the blocks. An uncorrupted image comes back exactly (no resampling blur); the padding only
  feeds the borders of blurs and warps. Images with a side above 32 are corrupted at their own size
  with the ``cifar-c`` procedures generalised to it (fog map, frost crop, elastic scale and the
  glass-blur loop follow the image side, which is ``make_cifar_c.py`` exactly at 32). Spatial
  extents (blur radii, fog scale, frost texture) are those of a 32x32 CIFAR image: on an 8x8 image
  a defocus of radius 1.5 px at 32 px covers 0.375 px, i.e. the 8x8 image is treated as a
  4x-downsampled CIFAR image; on 28x28 the pixel scale is CIFAR's, as for MNIST-C-style use.

Small images under ``imagenet-c`` (a side below 32 px, which ``imagecorruptions`` refuses): per-pixel
corruptions run at native resolution with the stated constants; spatial corruptions run on the image
upsampled by the smallest integer factor k with min(H, W) k >= 32 (nearest neighbour) and are
averaged back over k x k blocks (the exact inverse of an identity corruption).

**Grey images** (C = 1) are replicated to RGB, corrupted as RGB, and converted back with ITU-R
BT.601 luma (0.299 R + 0.587 G + 0.114 B). For the four noise corruptions, whose noise is drawn
independently per channel, the first channel is kept instead, so that a grey image receives noise
of the stated strength (luma would average three noises and weaken it).

Why per-pixel corruptions must not be resampled: averaging k x k blocks of independent per-pixel
noise divides its standard deviation by k (robustlab issue 12: gaussian noise at severity 5 had
std 0.080 at 8x8 instead of 0.32).

References: ``imagecorruptions.corrupt`` (refuses sides below 32 px; replicates grey to RGB);
``make_cifar_c.py`` (Hendrycks & Dietterich 2019); RobustBench (Croce et al. 2021) corruption
leaderboard, which evaluates on CIFAR-10-C.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import torch
import torch.nn.functional as F

from ..errors import SuiteError

MIN_SIDE = 32
CIFAR_SIDE = 32
AUTO_IMAGENET_MIN_SIDE = 64
CHANNELWISE_NOISE = frozenset({"gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"})
#: corruptions that change every pixel independently of its neighbours (noise drawn per pixel,
#: or a per-pixel colour map): always applied at native resolution.
POINTWISE = CHANNELWISE_NOISE | frozenset({"brightness", "contrast", "saturate"})
LUMA = (0.299, 0.587, 0.114)


class Protocol(str, Enum):
    """Which constants and procedures render the corruptions (see the module docstring)."""

    IMAGENET_C = "imagenet-c"
    CIFAR_C = "cifar-c"
    CIFAR_C_SMALL = "cifar-c-small"
    AUTO = "auto"

    @classmethod
    def parse(cls, value: "str | Protocol") -> "Protocol":
        try:
            return cls(value)
        except ValueError:
            raise SuiteError(f"unknown corruption protocol {value!r}; use one of {', '.join(p.value for p in cls)}.") from None

    @property
    def source(self) -> str:
        """Where the constants come from (recorded in check params and scorecard definitions)."""
        return SOURCES[self]


SOURCES = {
    Protocol.IMAGENET_C: "imagecorruptions 1.1.2 (bethgelab), the ImageNet-C constants of Hendrycks & Dietterich 2019, at native size",
    Protocol.CIFAR_C: "make_cifar_c.py (hendrycks/robustness, ImageNet-C/create_c), the script that rendered CIFAR-10-C / CIFAR-100-C",
    Protocol.CIFAR_C_SMALL: "make_cifar_c.py constants; per-pixel corruptions at native resolution, spatial ones rendered at 32x32 and resized back (robustlab.corruptions.protocol)",
    Protocol.AUTO: "resolved from the image size: cifar-c for 32x32, imagenet-c for sides >= 64, cifar-c-small otherwise",
}


def resolve(protocol: "Protocol | str", height: int, width: int) -> Protocol:
    """The concrete protocol for images of ``height`` x ``width`` (``auto`` resolved; ``cifar-c``
    on another size is a :class:`~robustlab.errors.SuiteError`)."""
    p = Protocol.parse(protocol)
    if p is Protocol.AUTO:
        if height == CIFAR_SIDE and width == CIFAR_SIDE:
            return Protocol.CIFAR_C
        if min(height, width) >= AUTO_IMAGENET_MIN_SIDE:
            return Protocol.IMAGENET_C
        return Protocol.CIFAR_C_SMALL
    if p is Protocol.CIFAR_C and (height, width) != (CIFAR_SIDE, CIFAR_SIDE):
        raise SuiteError(f"protocol cifar-c is defined for 32x32 images, these are {height}x{width}; use protocol: cifar-c-small (CIFAR-C constants for other sizes) or auto.")
    return p


@dataclass(frozen=True)
class Geometry:
    """How an input batch was mapped to the working (RGB) batch.

    ``factor`` > 1: integer nearest upsampling, averaged back over factor x factor blocks.
    ``pad``: (left, right, top, bottom) reflect padding to the 32x32 canvas (``cifar-c-small``),
    cropped off before averaging back.
    """

    channels: int
    factor: int
    pad: tuple[int, int, int, int] | None = None


def upscale_factor(height: int, width: int) -> int:
    """Smallest integer k with min(height, width) * k >= 32 (1 for images already large enough)."""
    side = min(height, width)
    return 1 if side >= MIN_SIDE else math.ceil(MIN_SIDE / max(side, 1))


def to_working(x: torch.Tensor, name: str = "", protocol: "Protocol | str" = Protocol.IMAGENET_C) -> tuple[torch.Tensor, Geometry]:
    """(N, C, H, W) in [0, 1] with C in {1, 3} -> (N, 3, H', W') working batch and its geometry.

    Per-pixel corruptions (:data:`POINTWISE`) always keep the native size; others follow
    ``protocol`` (integer upsampling for ``imagenet-c``, 32x32 for ``cifar-c-small``).
    """
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"corruptions take (N, C, H, W) images with C = 1 or 3, got shape {tuple(x.shape)}")
    protocol = Protocol.parse(protocol)
    c, h, w = int(x.shape[1]), int(x.shape[2]), int(x.shape[3])
    if c == 1:
        x = x.expand(-1, 3, -1, -1)
    if name in POINTWISE:
        return x.contiguous(), Geometry(channels=c, factor=1)
    if protocol is Protocol.CIFAR_C_SMALL:
        if h > CIFAR_SIDE or w > CIFAR_SIDE or (h, w) == (CIFAR_SIDE, CIFAR_SIDE):
            return x.contiguous(), Geometry(channels=c, factor=1)
        k = min(CIFAR_SIDE // h, CIFAR_SIDE // w)
        if k > 1:
            x = x.repeat_interleave(k, dim=2).repeat_interleave(k, dim=3)
        ph, pw = CIFAR_SIDE - k * h, CIFAR_SIDE - k * w
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        if any(pad):
            x = F.pad(x.contiguous(), pad, mode="reflect" if max(ph, pw) < min(k * h, k * w) else "replicate")
        return x.contiguous(), Geometry(channels=c, factor=k, pad=pad)
    k = upscale_factor(h, w)
    if k > 1:
        x = x.repeat_interleave(k, dim=2).repeat_interleave(k, dim=3)
    return x.contiguous(), Geometry(channels=c, factor=k)


def from_working(y: torch.Tensor, name: str, geometry: Geometry) -> torch.Tensor:
    """Inverse of :func:`to_working` for a corrupted working batch (see the module docstring)."""
    if geometry.pad is not None:
        left, right, top, bottom = geometry.pad
        y = y[..., top : y.shape[-2] - bottom, left : y.shape[-1] - right]
    if geometry.factor > 1:
        y = F.avg_pool2d(y, geometry.factor)
    if geometry.channels == 1:
        if name in CHANNELWISE_NOISE:
            y = y[:, :1]
        else:
            y = LUMA[0] * y[:, 0:1] + LUMA[1] * y[:, 1:2] + LUMA[2] * y[:, 2:3]
    return y.clamp(0.0, 1.0).contiguous()
