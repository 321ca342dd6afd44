"""Fast (batched torch) ``cifar-c`` corruptions, part 1: noises, colour, blur kernels, JPEG, pixelate.

Same contract as :data:`robustlab.corruptions.registry.FAST_CORRUPTIONS` (``fn(x, severity, seeds)``,
(N, C, H, W) float in [0, 1], image i's randomness from ``seeds[i]`` only), registered in
:data:`~robustlab.corruptions.registry.FAST_CIFAR_C`. Each function applies the procedure of
``make_cifar_c.py`` with its constants (:mod:`.constants`), reusing the ImageNet-C building blocks
of :mod:`robustlab.corruptions.fast` where the procedure is the same. Random draws come from
per-image ``torch.Generator`` s (same distributions as the script's numpy draws, other numbers);
the script's final ``np.uint8`` truncation is not applied (mean shift of -0.5/255).

References: Hendrycks & Dietterich, ICLR 2019; ``make_cifar_c.py`` (hendrycks/robustness).
"""

from __future__ import annotations

from typing import Sequence, cast

import numpy as np
import torch

from ..fast._ops import DENSE_MAX_PIXELS, apply_dense, cached_tensor, check_input, fft_conv2d_same, gaussian_draws, linear_resize_matrix, per_image
from ..fast._ops import gaussian_blur as _blur
from ..fast.brightness import brightness_shift
from ..fast.defocus_blur import dense_defocus, disk_kernel
from ..fast.jpeg_compression import jpeg_round_trip
from ..fast.motion_blur import motion_taps, shift_sum, uniform_per_image
from ..fast.pixelate import box_pass, box_weights
from ..fast.saturate import saturate_affine
from ..registry import FAST_CIFAR_C
from .constants import const, zoom_factors

Tensor = torch.Tensor


@FAST_CIFAR_C.register("gaussian_noise")
def gaussian_noise(x: Tensor, severity: int, seeds: Sequence[int]) -> Tensor:
    """``clip(x + N(0, sigma^2))``, sigma = .04 .06 .08 .09 .10."""
    check_input(x, severity, seeds)
    return cast("torch.Tensor", (x + const("gaussian_noise", severity) * gaussian_draws(x, seeds)).clamp(0.0, 1.0))


@FAST_CIFAR_C.register("speckle_noise")
def speckle_noise(x: Tensor, severity: int, seeds: Sequence[int]) -> Tensor:
    """``clip(x + x N(0, sigma^2))``, sigma = .06 .1 .12 .16 .2."""
    check_input(x, severity, seeds)
    return cast("torch.Tensor", (x + x * const("speckle_noise", severity) * gaussian_draws(x, seeds)).clamp(0.0, 1.0))


@FAST_CIFAR_C.register("shot_noise")
def shot_noise(x: Tensor, severity: int, seeds: Sequence[int]) -> Tensor:
    """``clip(Poisson(c x) / c)``, c = 500 250 100 75 50 (Poisson draws on the CPU)."""
    check_input(x, severity, seeds)
    from ..fast.shot_noise import poisson_photons

    return poisson_photons(x, float(const("shot_noise", severity)), seeds)


@FAST_CIFAR_C.register("impulse_noise")
def impulse_noise(x: Tensor, severity: int, seeds: Sequence[int]) -> Tensor:
    """Salt and pepper: each value becomes 0 or 1 with probability amount = .01 .02 .03 .05 .07."""
    check_input(x, severity, seeds)
    p = float(const("impulse_noise", severity))
    shape = tuple(x.shape[1:])
    u = per_image(seeds, lambda g: torch.rand(shape, generator=g), device=x.device)
    return torch.where(u < p, (u >= 0.5 * p).to(x.dtype), x).clamp(0.0, 1.0)


@FAST_CIFAR_C.register("brightness")
def brightness(x: Tensor, severity: int, seeds: Sequence[int]) -> Tensor:
    """HSV value + .05 .1 .15 .2 .3 (clipped)."""
    check_input(x, severity, seeds)
    return brightness_shift(x, float(const("brightness", severity)))


@FAST_CIFAR_C.register("contrast")
def contrast(x: Tensor, severity: int, seeds: Sequence[int]) -> Tensor:
    """``(x - m) c + m``, m the per-image per-channel mean, c = .75 .5 .4 .3 .15."""
    check_input(x, severity, seeds)
    m = x.mean(dim=(2, 3), keepdim=True)
    return ((x - m) * float(const("contrast", severity)) + m).clamp(0.0, 1.0)


@FAST_CIFAR_C.register("saturate")
def saturate(x: Tensor, severity: int, seeds: Sequence[int]) -> Tensor:
    """HSV saturation ``clip(S a + b)``."""
    check_input(x, severity, seeds)
    a, b = const("saturate", severity)
    return saturate_affine(x, float(a), float(b))


@FAST_CIFAR_C.register("jpeg_compression")
def jpeg_compression(x: Tensor, severity: int, seeds: Sequence[int]) -> Tensor:
    """JPEG (Pillow-compatible libjpeg) at quality 80 65 58 50 40."""
    check_input(x, severity, seeds)
    return jpeg_round_trip(x, int(const("jpeg_compression", severity)))


@FAST_CIFAR_C.register("pixelate")
def pixelate(x: Tensor, severity: int, seeds: Sequence[int]) -> Tensor:
    """Pillow BOX resize to ``int(side c)``, c = .95 .9 .85 .75 .65, and BOX resize back (the
    ImageNet-C version resizes back with NEAREST); each pass rounds to 8 bits as Pillow does."""
    check_input(x, severity, seeds)
    c = float(const("pixelate", severity))
    h, w = int(x.shape[2]), int(x.shape[3])
    hs, ws = max(int(h * c), 1), max(int(w * c), 1)
    u = (x.detach().clamp(0.0, 1.0) * 255.0).round().to(torch.float64)
    u = box_pass(box_pass(u, box_weights(w, ws), 3), box_weights(h, hs), 2)
    u = box_pass(box_pass(u, box_weights(ws, w), 3), box_weights(hs, h), 2)
    return (u / 255.0).to(x.dtype)


@FAST_CIFAR_C.register("gaussian_blur")
def gaussian_blur(x: Tensor, severity: int, seeds: Sequence[int]) -> Tensor:
    """``skimage.filters.gaussian`` (edge replication), sigma = .4 .6 .7 .8 1."""
    check_input(x, severity, seeds)
    return _blur(x, float(const("gaussian_blur", severity)), mode="nearest").clamp(0.0, 1.0)


@FAST_CIFAR_C.register("defocus_blur")
def defocus_blur(x: Tensor, severity: int, seeds: Sequence[int]) -> Tensor:
    """Anti-aliased disk kernel (radius, alias blur) = (.3, .4) (.4, .5) (.5, .6) (1, .2) (1.5, .1),
    ``cv2.filter2D`` with reflect-101 borders."""
    check_input(x, severity, seeds)
    radius, alias = const("defocus_blur", severity)
    kernel = disk_kernel(radius, alias)
    h, w = int(x.shape[2]), int(x.shape[3])
    if h * w <= DENSE_MAX_PIXELS:
        op = cached_tensor(("defocus", radius, alias, h, w), lambda: dense_defocus(kernel, h, w), dtype=x.dtype, device=x.device)
        return apply_dense(x, op).clamp(0.0, 1.0)
    return fft_conv2d_same(x, kernel, mode="mirror").clamp(0.0, 1.0)


def centred_zoom_matrix(n: int, zoom: float) -> np.ndarray:
    """(n, n) matrix of ``make_cifar_c.py``'s ``clipped_zoom`` along one axis: the centre crop of
    ``ceil(n / zoom)`` pixels zoomed linearly (scipy ``zoom(order=1)``) to ``round(crop zoom)`` pixels,
    of which the *centred* n are kept (``imagecorruptions`` keeps the first n)."""
    crop = int(np.ceil(n / float(zoom)))
    top = (n - crop) // 2
    n_out = int(round(crop * float(zoom)))
    trim = (n_out - n) // 2
    return linear_resize_matrix(crop, n_out, offset=float(top), src_len=n)[trim : trim + n]


def centred_zoom(x: Tensor, zoom: float) -> Tensor:
    """Apply :func:`centred_zoom_matrix` to both spatial axes of (..., H, W) ``x``."""
    h, w = x.shape[-2:]
    mh = torch.as_tensor(centred_zoom_matrix(int(h), zoom), dtype=x.dtype, device=x.device)
    mw = torch.as_tensor(centred_zoom_matrix(int(w), zoom), dtype=x.dtype, device=x.device)
    return torch.matmul(torch.matmul(mh, x), mw.transpose(0, 1))


def _dense_zoom(factors: list[float], h: int, w: int) -> np.ndarray:
    op = np.eye(h * w)
    for z in factors:
        op += np.kron(centred_zoom_matrix(h, z), centred_zoom_matrix(w, z))
    return op / (len(factors) + 1)


@FAST_CIFAR_C.register("zoom_blur")
def zoom_blur(x: Tensor, severity: int, seeds: Sequence[int]) -> Tensor:
    """Mean of the image and its centred zooms by ``arange(1, 1.06 .. 1.26, .01)``."""
    check_input(x, severity, seeds)
    factors = zoom_factors(severity)
    h, w = int(x.shape[2]), int(x.shape[3])
    if h * w <= DENSE_MAX_PIXELS:
        op = cached_tensor(("zoom_blur_cifar_c", int(severity), h, w), lambda: _dense_zoom(factors, h, w), dtype=x.dtype, device=x.device)
        return apply_dense(x, op).clamp(0.0, 1.0)
    out = x.clone()
    for z in factors:
        out += centred_zoom(x, z)
    return (out / (len(factors) + 1)).clamp(0.0, 1.0)


@FAST_CIFAR_C.register("motion_blur")
def motion_blur(x: Tensor, severity: int, seeds: Sequence[int]) -> Tensor:
    """Motion blur (radius, sigma) = (6, 1) (6, 1.5) (6, 2) (8, 2) (9, 2.5) along U(-45, 45) degrees,
    with ``imagecorruptions``' NumPy motion-blur kernel (the script used ImageMagick's, through Wand)."""
    check_input(x, severity, seeds)
    if x.shape[0] == 0:
        return x.clone()
    radius, sigma = const("motion_blur", severity)
    angles = uniform_per_image(seeds, -45.0, 45.0)
    dy, dx, w = motion_taps(angles, int(radius), float(sigma), x.shape[-2], x.shape[-1])
    return shift_sum(x, dy, dx, w).clamp_(0.0, 1.0)
