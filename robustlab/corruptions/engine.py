"""One entry point for both corruption backends: :func:`corrupt`.

``corrupt(x, name, severity, seeds, backend=Backend.FAST)`` takes (N, C, H, W) images in [0, 1]
(C = 1 or 3, any size), applies :mod:`robustlab.corruptions.protocol` (grey -> RGB, small images
upsampled by an integer factor) and calls the fast torch implementation registered in
:data:`~robustlab.corruptions.registry.FAST_CORRUPTIONS` or the reference (``imagecorruptions``).
:func:`corruption_seeds` gives the per-image seeds: a hash of (run seed, corruption, severity,
sample id), so the same sample gets the same corrupted image whatever the batch size or order.
"""

from __future__ import annotations

import difflib
from enum import Enum
from typing import Sequence

import torch

from ..errors import SuiteError, UnknownNameError
from ..seeding import sample_seeds
from .protocol import Protocol, from_working, resolve, to_working
from .names import BUILTIN
from .registry import FAST_CIFAR_C, FAST_CORRUPTIONS, corruption_names


class Backend(str, Enum):
    """Which implementation renders the corruptions."""

    FAST = "fast"
    REFERENCE = "reference"

    @classmethod
    def parse(cls, value: "str | Backend") -> "Backend":
        try:
            return cls(value)
        except ValueError:
            raise SuiteError(f"unknown corruption backend {value!r}; use 'fast' (batched torch) or 'reference' (imagecorruptions).") from None


def check_name(name: str) -> str:
    """Return ``name`` if it is a registered corruption (built-in or plugin), else raise with the closest names."""
    if name not in FAST_CORRUPTIONS:
        known = corruption_names()
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownNameError(f"unknown corruption {name!r}.{hint} Known: {', '.join(known)}.")
    return name


def corruption_seeds(seed: int, name: str, severity: int, ids: Sequence[str]) -> list[int]:
    """Per-image seeds for (run seed, corruption, severity, sample id)."""
    return sample_seeds(seed, f"corruption/{name}/s{int(severity)}", list(ids))


def corrupt(
    x: torch.Tensor,
    name: str,
    severity: int,
    seeds: Sequence[int],
    *,
    backend: Backend | str = Backend.FAST,
    protocol: Protocol | str = Protocol.IMAGENET_C,
) -> torch.Tensor:
    """Corrupt a batch.

    Args:
        x: (N, C, H, W) float in [0, 1], C = 1 or 3, any H, W, any device.
        name: a registered corruption: the 19 ImageNet-C ones or a plugin (fast backend only).
        severity: 1..5.
        seeds: one integer per image; image i's randomness depends only on ``seeds[i]``.
        backend: ``fast`` (batched torch, on ``x``'s device) or ``reference`` (one image at a
            time on the CPU: ``imagecorruptions`` for ``imagenet-c``, robustlab's NumPy transcription
            of ``make_cifar_c.py`` for ``cifar-c`` / ``cifar-c-small``).
        protocol: ``imagenet-c``, ``cifar-c``, ``cifar-c-small`` or ``auto`` (resolved from the
            image size), see :mod:`robustlab.corruptions.protocol`.
    Returns:
        (N, C, H, W) float32 in [0, 1] on ``x``'s device.

    References: Hendrycks & Dietterich, ICLR 2019; ``imagecorruptions`` 1.1.2.
    """
    check_name(name)
    if int(severity) not in (1, 2, 3, 4, 5):
        raise SuiteError(f"corruption severity must be 1..5, got {severity!r}.")
    if len(seeds) != x.shape[0]:
        raise ValueError(f"need one seed per image: {len(seeds)} seeds for {x.shape[0]} images")
    b = Backend.parse(backend)
    proto = resolve(protocol, int(x.shape[-2]), int(x.shape[-1])) if x.ndim == 4 else Protocol.parse(protocol)
    x = x.float()
    if b is Backend.REFERENCE:
        if name not in BUILTIN:
            raise SuiteError(f"corruption {name!r} is a plugin and has no reference implementation; use backend: fast.")
        if proto is Protocol.IMAGENET_C:
            from .reference import reference_corrupt

            return reference_corrupt(x, name, int(severity), seeds)
        from .cifar_c.reference import reference_cifar_c

        work, geom = to_working(x.detach().cpu(), name, proto)
        return from_working(reference_cifar_c(work, name, int(severity), seeds), name, geom).to(x.device)
    # a plugin corruption has one implementation for every protocol (the cifar-c registry falls back to it)
    fn = FAST_CIFAR_C.get(name) if proto is not Protocol.IMAGENET_C and name in FAST_CIFAR_C else FAST_CORRUPTIONS.get(name)
    work, geom = to_working(x, name, proto)
    return from_working(fn(work, int(severity), list(seeds)), name, geom)


def to_uint8(y: torch.Tensor) -> torch.Tensor:
    """8-bit levels of corrupted images in [0, 1]: ``floor(255 y)`` (the reference scripts' ``np.uint8``
    truncation; a 1e-3 margin keeps exact levels such as 128/255 from dropping to 127 in float32).
    (N, C, H, W) float -> same shape, uint8. The corruption check evaluates these levels and
    ``robustlab corrupt`` stores them, so a saved set reproduces on-the-fly numbers exactly."""
    return torch.floor(y.detach().clamp(0.0, 1.0) * 255.0 + 1e-3).clamp_(0, 255).to(torch.uint8)
