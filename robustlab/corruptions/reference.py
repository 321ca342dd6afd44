"""Reference backend: ``imagecorruptions`` (bethgelab), one image at a time, made reproducible.

``imagecorruptions`` works on one uint8 HWC image and draws its randomness from numpy's *global*
legacy RNG. This backend therefore, for every image i: quantises it to uint8 (``round(255 x)``),
calls ``np.random.seed(seeds[i] mod 2**32)``, calls ``imagecorruptions.corrupt`` and converts the
uint8 result back to float32 / 255. The global numpy RNG state is saved before and restored after,
so callers' numpy randomness is not disturbed. It is not thread-safe (nor is the reference).

Grey, small and non-square images follow :mod:`robustlab.corruptions.protocol` (replicate grey to
RGB; per-pixel corruptions at native size, calling the ``imagecorruptions`` function directly since
its ``corrupt`` refuses sides below 32 px; spatial ones upsampled by an integer factor and averaged
back).

References: Hendrycks & Dietterich, ICLR 2019; ``imagecorruptions`` 1.1.2, loaded through
:mod:`robustlab.corruptions.compat`.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .compat import REFERENCE_NAMES, load_imagecorruptions
from .protocol import from_working, to_working


def reference_corrupt(x: torch.Tensor, name: str, severity: int, seeds: Sequence[int]) -> torch.Tensor:
    """Corrupt a batch with the reference implementation.

    Args:
        x: (N, C, H, W) float in [0, 1], C = 1 or 3, any H, W, any device.
        name: one of the 19 corruption names (``imagecorruptions`` spelling).
        severity: 1..5.
        seeds: N integers; image i is corrupted with ``np.random.seed(seeds[i] % 2**32)``.
    Returns:
        (N, C, H, W) float32 in [0, 1] on ``x``'s device.

    References: ``imagecorruptions.corrupt`` (Hendrycks & Dietterich 2019).
    """
    if name not in REFERENCE_NAMES:
        raise ValueError(f"unknown corruption {name!r}; known: {', '.join(REFERENCE_NAMES)}")
    if int(severity) not in (1, 2, 3, 4, 5):
        raise ValueError(f"severity must be 1..5, got {severity!r}")
    if len(seeds) != x.shape[0]:
        raise ValueError(f"need one seed per image: {len(seeds)} seeds for {x.shape[0]} images")
    ic = load_imagecorruptions()
    work, geom = to_working(x.detach().float().cpu(), name)
    small = min(work.shape[-2:]) < 32
    imgs = (work.clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = np.empty_like(imgs)
    state = np.random.get_state()
    try:
        for i in range(imgs.shape[0]):
            np.random.seed(int(seeds[i]) % 2**32)
            img = np.ascontiguousarray(imgs[i])
            if small:  # per-pixel corruptions only (to_working upsamples the others)
                from PIL import Image

                out[i] = np.uint8(getattr(ic.corruptions, name)(Image.fromarray(img), int(severity)))
            else:
                out[i] = ic.corrupt(img, severity=int(severity), corruption_name=name)
    finally:
        np.random.set_state(state)
    y = torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(255.0)
    return from_working(y, name, geom).to(x.device)
