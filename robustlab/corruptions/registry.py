"""Registry of the fast (torch) corruption implementations, one module per corruption.

Contract of a fast corruption, registered with ``@FAST_CORRUPTIONS.register("name")``::

    def corrupt(x: Tensor, severity: int, seeds: Sequence[int]) -> Tensor

``x`` is (N, C, H, W) float32 in [0, 1] (C = 1 or 3, any H, W) on any device; ``severity`` in 1..5;
``seeds`` one integer per image (randomness of image i depends only on ``seeds[i]``, never on the
batch). The result has the same shape, dtype and device, values in [0, 1], and follows the
reference implementation (``imagecorruptions``) as documented in the module.

Built-ins are the modules of :mod:`robustlab.corruptions.fast`; third parties register through the
entry-point group ``robustlab.corruptions`` (a function with the contract above). A plugin
corruption runs under every protocol (the ``cifar-c`` registry falls back to it) and with the
``fast`` backend only.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..registry import Registry
from .names import ALL, BENCHMARK, BUILTIN, HELD_OUT

__all__ = ["ALL", "BENCHMARK", "BUILTIN", "FAST_CIFAR_C", "FAST_CORRUPTIONS", "HELD_OUT", "FastCorruption", "corruption_names"]

FastCorruption = Callable[[torch.Tensor, int, Sequence[int]], torch.Tensor]

FAST_CORRUPTIONS: "Registry[FastCorruption]" = Registry("corruption", group="robustlab.corruptions", package="robustlab.corruptions.fast")

#: fast implementations of the ``cifar-c`` protocol (``make_cifar_c.py``'s constants and procedures),
#: same contract; used for ``cifar-c`` and ``cifar-c-small``.
FAST_CIFAR_C: "Registry[FastCorruption]" = Registry("cifar-c corruption", group="robustlab.corruptions_cifar_c", package="robustlab.corruptions.cifar_c")


def corruption_names() -> list[str]:
    """Every registered corruption: the 19 built-ins in benchmark order, then plugins by name."""
    extra = [n for n in FAST_CORRUPTIONS.names() if n not in BUILTIN]
    return list(BUILTIN) + extra
