"""Certified accuracy, average certified radius and the standard noise levels.

Pure numpy (no torch).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

#: Gaussian noise levels (in [0, 1] pixel units) used in the literature, by data set family.
#: CIFAR-10 and ImageNet: Cohen et al. 2019; MNIST: Salman et al. 2019 and later work. For the 8x8
#: ``digits`` set robustlab uses the MNIST levels (its own choice: there is no published standard).
STANDARD_SIGMAS: dict[str, tuple[float, ...]] = {
    "cifar10": (0.12, 0.25, 0.5, 1.0),
    "cifar100": (0.12, 0.25, 0.5, 1.0),
    "imagenet": (0.25, 0.5, 1.0),
    "mnist": (0.25, 0.5, 1.0),
    "fashion-mnist": (0.25, 0.5, 1.0),
    "digits": (0.25, 0.5, 1.0),
}
DEFAULT_SIGMAS: tuple[float, ...] = (0.12, 0.25, 0.5, 1.0)


def standard_sigmas(data_spec: str) -> tuple[float, ...]:
    """Standard sigmas for a data spec such as ``samples:cifar10``, ``digits`` or ``cifar10``."""
    name = data_spec.lower().split(":")[-1].strip()
    for key in sorted(STANDARD_SIGMAS, key=len, reverse=True):
        if key in name:
            return STANDARD_SIGMAS[key]
    return DEFAULT_SIGMAS


def certified_accuracy(radii: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray, r: float) -> float:
    """Fraction of *all* points that are certified, correct and have radius ``>= r``.

    Args:
        radii: (N,) certified radii (0 for abstentions). correct: (N,) certified class == label
            (False for abstentions).
    References: Cohen et al. 2019, Sec. 4 (``analyze.py`` of locuslab/smoothing:
        ``(correct & (radius >= r)).mean()``).
    """
    rad = np.asarray(radii, dtype=np.float64)
    ok = np.asarray(correct, dtype=bool)
    if rad.size == 0:
        return float("nan")
    return float((ok & (rad >= r)).mean())


def certified_count(radii: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray, r: float) -> int:
    rad = np.asarray(radii, dtype=np.float64)
    return int((np.asarray(correct, dtype=bool) & (rad >= r)).sum())


def average_certified_radius(radii: Sequence[float] | np.ndarray, correct: Sequence[bool] | np.ndarray) -> float:
    """ACR: mean over all points of the radius of correct certified points (0 otherwise).

    References: Zhai et al., "MACER: Attack-free and Scalable Robust Training via Maximizing
        Certified Radius", ICLR 2020, Eq. (ACR).
    """
    rad = np.asarray(radii, dtype=np.float64)
    ok = np.asarray(correct, dtype=bool)
    if rad.size == 0:
        return float("nan")
    return float(np.where(ok, rad, 0.0).mean())


def radius_grid(max_radius: float, *, points: int = 41) -> list[float]:
    """Evenly spaced radii from 0 to ``max_radius`` (rounded to 4 decimals), for curves."""
    return [round(float(v), 4) for v in np.linspace(0.0, max(max_radius, 1e-6), points)]
