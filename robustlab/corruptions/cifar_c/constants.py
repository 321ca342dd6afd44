"""The CIFAR-10-C / CIFAR-100-C constants, one 5-tuple (severities 1..5) per corruption.

Transcribed from ``make_cifar_c.py`` (hendrycks/robustness, ``ImageNet-C/create_c/make_cifar_c.py``),
the script that rendered the published CIFAR-10-C and CIFAR-100-C sets. Meaning of each entry:

* gaussian_noise: sigma; shot_noise: photons c (``Poisson(c x) / c``); impulse_noise: s&p amount;
  speckle_noise: sigma (``x + x N(0, sigma^2)``);
* gaussian_blur: sigma; glass_blur: (sigma, max_delta, iterations); defocus_blur: (radius, alias
  blur); motion_blur: (radius, sigma); zoom_blur: (start, stop, step) of ``np.arange``;
* snow: (loc, scale, zoom, threshold, blur radius, blur sigma, blend); frost: (image weight, frost
  weight); fog: (strength, wibble decay); spatter: (loc, scale, sigma, threshold, intensity or mud
  sigma, mud?);
* brightness: HSV value shift; contrast: factor; saturate: (a, b) of ``S a + b``;
  jpeg_compression: quality; pixelate: size factor; elastic_transform: (alpha, sigma, affine) as
  fractions of the image side (the script multiplies by IMSIZE = 32).

Frost photographs are resized by 0.2 (``cv2.resize`` bilinear) and cropped to 32x32; fog uses a
32x32 plasma map. References: Hendrycks & Dietterich, ICLR 2019.
"""

from __future__ import annotations

from typing import Any

CIFAR_C: dict[str, tuple[Any, ...]] = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500.0, 250.0, 100.0, 75.0, 50.0),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "speckle_noise": (0.06, 0.1, 0.12, 0.16, 0.2),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    "glass_blur": ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)),
    "defocus_blur": ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1)),
    "motion_blur": ((6, 1.0), (6, 1.5), (6, 2.0), (8, 2.0), (9, 2.5)),
    "zoom_blur": ((1.0, 1.06, 0.01), (1.0, 1.11, 0.01), (1.0, 1.16, 0.01), (1.0, 1.21, 0.01), (1.0, 1.26, 0.01)),
    "snow": (
        (0.1, 0.2, 1.0, 0.6, 8, 3.0, 0.95),
        (0.1, 0.2, 1.0, 0.5, 10, 4.0, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4.0, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6.0, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12.0, 0.8),
    ),
    "frost": ((1.0, 0.2), (1.0, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)),
    "fog": ((0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75)),
    "spatter": (
        (0.62, 0.1, 0.7, 0.7, 0.5, 0),
        (0.65, 0.1, 0.8, 0.7, 0.5, 0),
        (0.65, 0.3, 1.0, 0.69, 0.5, 0),
        (0.65, 0.1, 0.7, 0.69, 0.6, 1),
        (0.65, 0.1, 0.5, 0.68, 0.6, 1),
    ),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "saturate": ((0.3, 0.0), (0.1, 0.0), (1.5, 0.0), (2.0, 0.1), (2.5, 0.2)),
    "jpeg_compression": (80, 65, 58, 50, 40),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    "elastic_transform": ((0.0, 0.0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)),
}
FROST_SCALE = 0.2


def const(name: str, severity: int) -> Any:
    """The constant(s) of corruption ``name`` at ``severity`` (1..5)."""
    return CIFAR_C[name][int(severity) - 1]


def zoom_factors(severity: int) -> "list[float]":
    """The zoom factors of zoom blur, as ``np.arange(start, stop, step)`` gives them."""
    import numpy as np

    start, stop, step = const("zoom_blur", severity)
    return [float(z) for z in np.arange(start, stop, step)]
