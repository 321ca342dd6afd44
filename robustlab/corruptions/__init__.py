"""Common corruptions (Hendrycks & Dietterich 2019): a reference backend (``imagecorruptions``,
made to work on today's stack) and a fast batched torch backend, one file per corruption.

Public API (imported lazily, so ``import robustlab.corruptions`` stays light)::

    from robustlab.corruptions import corrupt, Backend, corruption_seeds, reference_corrupt
    y = corrupt(x, "fog", 3, seeds, backend="fast", protocol="auto")     # x: (N, C, H, W) in [0, 1]

Names: :mod:`.names` (torch-free: ``BENCHMARK`` (15), ``HELD_OUT`` (4), ``BUILTIN`` = ``ALL`` (19)); what
exists, plugins included: ``registry.FAST_CORRUPTIONS`` (entry points ``robustlab.corruptions``). Protocols
(imagenet-c, cifar-c, cifar-c-small, auto) and how sizes and grey images are handled:
:mod:`robustlab.corruptions.protocol`; the cifar-c backends: :mod:`robustlab.corruptions.cifar_c`;
saved sets: :mod:`robustlab.corruptions.precomputed` (read) and :mod:`robustlab.corruptions.writer`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ALL", "BENCHMARK", "HELD_OUT", "Backend", "Protocol", "corrupt", "corruption_seeds", "to_uint8", "reference_corrupt", "load_imagecorruptions", "open_precomputed"]

_LAZY = {
    "ALL": "names", "BENCHMARK": "names", "HELD_OUT": "names",
    "Backend": "engine", "corrupt": "engine", "corruption_seeds": "engine", "to_uint8": "engine", "Protocol": "protocol",
    "reference_corrupt": "reference", "load_imagecorruptions": "compat", "open_precomputed": "precomputed",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
