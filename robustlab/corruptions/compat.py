"""Make ``imagecorruptions`` 1.1.2 (the ImageNet-C reference implementation) work on today's stack,
without editing or downgrading anything.

What breaks and how it is fixed (all fixes are local to the ``imagecorruptions.corruptions`` module's
namespace; no global numpy/scikit-image/setuptools state is changed):

1. ``from pkg_resources import resource_filename`` at import time: setuptools >= 80 no longer ships
   ``pkg_resources``. A stand-in module with only ``resource_filename`` (resolving paths next to the
   module's file, which is what ``pkg_resources`` did for a plain directory install) is placed in
   ``sys.modules`` *only for the duration of the import* when no real ``pkg_resources`` exists, then
   removed again. The frost images (``frost/frost1.png`` ...) load through it.
2. ``skimage.filters.gaussian(..., multichannel=True)`` (glass_blur, gaussian_blur): the keyword was
   removed in scikit-image 0.19+. The module's ``gaussian`` is replaced by a wrapper that maps
   ``multichannel=True`` to ``channel_axis=-1``.
3. ``np.float_`` (fog's plasma fractal): removed in numpy 2. The module's global ``np`` is replaced
   by a proxy of numpy that adds ``float_ = float64``; numpy itself is untouched.
4. ``skimage.util.random_noise`` (impulse_noise) draws from a fresh ``np.random.default_rng()`` in
   current scikit-image, so ``np.random.seed`` no longer makes it reproducible. The module's ``sk``
   is replaced by a proxy whose ``util.random_noise`` passes ``rng=`` a generator seeded from
   numpy's legacy global RNG, so that the per-image ``np.random.seed`` of the reference backend
   determines the result again (the distribution is unchanged).
5. ``scipy.ndimage.interpolation`` (deprecated namespace, removed in SciPy 2): if it is missing at
   import time, it is aliased to ``scipy.ndimage`` for the import only.

References: imagecorruptions 1.1.2 (https://github.com/bethgelab/imagecorruptions), Hendrycks &
Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and Perturbations", ICLR 2019.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import types
from typing import Any, cast

_LOCK = threading.Lock()
_MODULE: types.ModuleType | None = None

#: The corruption names of ``imagecorruptions``, in its order (15 benchmark, then 4 held-out).
REFERENCE_NAMES = (
    "gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur", "motion_blur",
    "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform", "pixelate",
    "jpeg_compression", "speckle_noise", "gaussian_blur", "spatter", "saturate",
)


def _resource_filename(package_or_requirement: str, resource_name: str) -> str:
    """Stand-in for ``pkg_resources.resource_filename`` for plain directory installs."""
    mod = sys.modules.get(package_or_requirement) or importlib.import_module(package_or_requirement)
    file = getattr(mod, "__file__", None)
    if file is None:  # pragma: no cover - namespace packages are not used by imagecorruptions
        raise FileNotFoundError(f"cannot locate resources of {package_or_requirement}")
    return os.path.normpath(os.path.join(os.path.dirname(file), resource_name))


class _NumpyProxy(types.ModuleType):
    """numpy, plus the aliases numpy 2 removed (``float_``), for one module's namespace only."""

    def __init__(self) -> None:
        import numpy as np

        super().__init__("numpy")
        self.__dict__["_np"] = np
        self.__dict__["float_"] = np.float64

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["_np"], name)


def _gaussian_compat(image: Any, sigma: Any = 1, *args: Any, multichannel: bool | None = None, **kwargs: Any) -> Any:
    """``skimage.filters.gaussian`` accepting the removed ``multichannel`` keyword."""
    from skimage.filters import gaussian

    if multichannel is not None and "channel_axis" not in kwargs:
        kwargs["channel_axis"] = -1 if multichannel else None
    return cast(Any, gaussian)(image, sigma, *args, **kwargs)  # skimage may ship untyped: call through Any


def _random_noise_legacy_seeded(image: Any, mode: str = "gaussian", rng: Any = None, clip: bool = True, **kwargs: Any) -> Any:
    """``skimage.util.random_noise`` whose default generator is seeded from numpy's global RNG."""
    import numpy as np
    from skimage.util import random_noise

    if rng is None:
        rng = np.random.default_rng(int(np.random.randint(0, 2**31 - 1)))
    return cast(Any, random_noise)(image, mode=mode, rng=rng, clip=clip, **kwargs)


def _skimage_proxy() -> types.SimpleNamespace:
    import skimage.color
    import skimage.util

    util = types.SimpleNamespace(**{k: getattr(skimage.util, k) for k in dir(skimage.util) if not k.startswith("__")})
    util.random_noise = _random_noise_legacy_seeded
    return types.SimpleNamespace(util=util, color=skimage.color, __name__="skimage")


def load_imagecorruptions() -> types.ModuleType:
    """Import ``imagecorruptions`` with the compatibility fixes applied (idempotent, thread-safe).

    Returns:
        The patched ``imagecorruptions`` package; use its ``corrupt(image_uint8_hwc, severity,
        corruption_name=...)`` as documented upstream.
    """
    global _MODULE
    with _LOCK:
        if _MODULE is not None:
            return _MODULE
        added: list[str] = []
        try:
            try:
                import pkg_resources  # noqa: F401
            except ImportError:
                shim = types.ModuleType("pkg_resources")
                shim.resource_filename = _resource_filename  # type: ignore[attr-defined]
                sys.modules["pkg_resources"] = shim
                added.append("pkg_resources")
            try:
                import scipy.ndimage.interpolation  # noqa: F401
            except ImportError:  # pragma: no cover - SciPy >= 2
                import scipy.ndimage

                sys.modules["scipy.ndimage.interpolation"] = scipy.ndimage
                added.append("scipy.ndimage.interpolation")
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                pkg = importlib.import_module("imagecorruptions")
        finally:
            for name in added:
                sys.modules.pop(name, None)
        mod = sys.modules["imagecorruptions.corruptions"]
        mod.gaussian = _gaussian_compat  # type: ignore[attr-defined]
        mod.np = _NumpyProxy()  # type: ignore[attr-defined]
        mod.sk = _skimage_proxy()  # type: ignore[attr-defined]
        if "pkg_resources" in added:
            mod.resource_filename = _resource_filename  # type: ignore[attr-defined]
        _MODULE = pkg
        return pkg
