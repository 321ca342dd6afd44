"""Synthetic and bundled OOD image sources that need no download.

Specs: ``noise:gaussian`` (N(0.5, 0.25^2) per pixel, clipped), ``noise:uniform`` (U[0, 1] per pixel),
``blobs`` (Bernoulli(0.7) noise, Gaussian-blurred spatially, values < 0.75 set to 0: after Hendrycks et al.'s
outlier-exposure "Blobs", which also blurs across channels) and
``photos`` (random square crops of scikit-learn's two bundled sample photographs, resized).
Every image is drawn from its own generator seeded by (seed, spec, index), so a set does not depend
on how many images are drawn or in what order. Images are (n, C, H, W) in [0, 1]; map them to the
model's bounds afterwards.
"""

from __future__ import annotations

from enum import Enum
from functools import lru_cache
from typing import Sequence, cast

import numpy as np
import torch

from ..errors import DataError
from ..metric_keys import legal_segment
from ..seeding import derive_seed


class Source(str, Enum):
    GAUSSIAN = "noise:gaussian"
    UNIFORM = "noise:uniform"
    BLOBS = "blobs"
    PHOTOS = "photos"


SYNTHETIC = tuple(s.value for s in Source)


def is_synthetic(spec: str) -> bool:
    return spec in SYNTHETIC


def set_name(spec: str) -> str:
    """A short, slash-free name for metric keys: ``samples:cifar100`` -> ``cifar100``,
    ``noise:gaussian`` -> ``noise_gaussian``, ``npz:/a/b.npz`` -> ``b``; ``name=spec`` -> ``name``."""
    if "=" in spec and ":" not in spec.split("=", 1)[0]:
        return legal_segment(spec.split("=", 1)[0])  # a user's name: only characters metric keys allow
    if spec.startswith("noise:"):
        return "noise_" + spec.split(":", 1)[1]
    rest = spec.split(":", 1)[1] if ":" in spec else spec
    rest = rest.rstrip("/").split("/")[-1]
    rest = rest.rsplit(".", 1)[0] if rest.endswith((".npz", ".npy")) else rest
    return legal_segment("".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in rest) or "ood")


def strip_name(spec: str) -> str:
    """The data spec of a ``name=spec`` entry."""
    if "=" in spec and ":" not in spec.split("=", 1)[0]:
        return spec.split("=", 1)[1]
    return spec


@lru_cache(maxsize=1)
def _photos() -> tuple[np.ndarray, ...]:
    from sklearn.datasets import load_sample_images

    return tuple(np.asarray(im, dtype=np.float32) / 255.0 for im in load_sample_images().images)


def _one(kind: Source, rng: np.random.Generator, shape: Sequence[int]) -> np.ndarray:
    c, h, w = shape
    if kind is Source.GAUSSIAN:
        return np.clip(rng.normal(0.5, 0.25, size=(c, h, w)), 0.0, 1.0)
    if kind is Source.UNIFORM:
        return rng.uniform(0.0, 1.0, size=(c, h, w))
    if kind is Source.BLOBS:
        from scipy.ndimage import gaussian_filter

        x = rng.binomial(1, 0.7, size=(c, h, w)).astype(np.float64)
        x = gaussian_filter(x, sigma=(0.0, 1.5 * h / 32, 1.5 * w / 32))
        x[x < 0.75] = 0.0
        return cast("np.ndarray", x)
    photos = _photos()
    img = photos[int(rng.integers(len(photos)))]
    ph, pw = img.shape[:2]
    side = int(rng.integers(max(8, min(ph, pw) // 10), min(ph, pw) // 2 + 1))
    top, left = int(rng.integers(ph - side + 1)), int(rng.integers(pw - side + 1))
    return img[top : top + side, left : left + side].transpose(2, 0, 1)


def synthetic_images(spec: str, *, n: int, shape: Sequence[int], seed: int) -> torch.Tensor:
    """(n, C, H, W) float32 images in [0, 1] of the synthetic source ``spec`` (see module doc).

    References: Hendrycks, Mazeika & Dietterich, "Deep Anomaly Detection with Outlier Exposure",
        ICLR 2019 (Gaussian, uniform noise and Blobs test sets, github.com/hendrycks/outlier-exposure).
    """
    from ..data.base import adapt_images

    try:
        kind = Source(spec)
    except ValueError as exc:
        raise DataError(f"unknown synthetic OOD source {spec!r}; use one of {', '.join(SYNTHETIC)}.") from exc
    if n < 1:
        raise DataError(f"synthetic OOD sets need n >= 1 images, got {n}.")
    c, h, w = (int(s) for s in shape)
    out = []
    for i in range(n):
        rng = np.random.default_rng(derive_seed(seed, "ood-source", spec, i))
        img = torch.from_numpy(np.ascontiguousarray(_one(kind, rng, (c, h, w)), dtype=np.float32))[None]
        if tuple(img.shape[1:]) != (c, h, w):
            img = adapt_images(img, (c, h, w))
        out.append(img)
    return torch.cat(out).clamp(0.0, 1.0).contiguous()
