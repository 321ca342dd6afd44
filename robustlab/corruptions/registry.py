"""Registry of the fast (torch) corruption implementations.

Contract of a fast corruption, registered with ``@FAST_CORRUPTIONS.register("name")``::

    def corrupt(x: Tensor, severity: int, seeds: Sequence[int]) -> Tensor

``x`` is (N, C, H, W) float32 in [0, 1] (C = 1 or 3, any H, W) on any device; ``severity`` in 1..5;
``seeds`` one integer per image (randomness of image i depends only on ``seeds[i]``, never on the
batch). The result has the same shape, dtype and device, values in [0, 1], and follows the
reference implementation (``imagecorruptions``) as documented in the module.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..registry import Registry

FastCorruption = Callable[[torch.Tensor, int, Sequence[int]], torch.Tensor]

FAST_CORRUPTIONS: "Registry[FastCorruption]" = Registry(
    "corruption", group="robustlab.corruptions", builtins=("robustlab.corruptions.fast",)
)

#: fast implementations of the ``cifar-c`` protocol (``make_cifar_c.py``'s constants and procedures),
#: same contract; used for ``cifar-c`` and ``cifar-c-small``.
FAST_CIFAR_C: "Registry[FastCorruption]" = Registry(
    "cifar-c corruption", group="robustlab.corruptions_cifar_c", builtins=("robustlab.corruptions.cifar_c.fast", "robustlab.corruptions.cifar_c.fast_spatial")
)

BENCHMARK = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
    "jpeg_compression",
)
HELD_OUT = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL = BENCHMARK + HELD_OUT
