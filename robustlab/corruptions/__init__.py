"""Common corruptions (Hendrycks & Dietterich 2019): a reference backend (``imagecorruptions``,
made to work on today's stack) and a fast batched torch backend, one file per corruption.

Public API (imported lazily, so ``import robustlab.corruptions`` stays light)::

    from robustlab.corruptions import corrupt, Backend, corruption_seeds, reference_corrupt
    y = corrupt(x, "fog", 3, seeds, backend="fast")     # x: (N, C, H, W) in [0, 1]

Names: ``registry.ALL`` (19), ``registry.BENCHMARK`` (15), ``registry.HELD_OUT`` (4). How sizes
and grey images are handled: :mod:`robustlab.corruptions.protocol`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ALL", "BENCHMARK", "HELD_OUT", "Backend", "corrupt", "corruption_seeds", "reference_corrupt", "load_imagecorruptions", "open_precomputed"]

_LAZY = {
    "ALL": "registry", "BENCHMARK": "registry", "HELD_OUT": "registry",
    "Backend": "engine", "corrupt": "engine", "corruption_seeds": "engine",
    "reference_corrupt": "reference", "load_imagecorruptions": "compat", "open_precomputed": "precomputed",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
