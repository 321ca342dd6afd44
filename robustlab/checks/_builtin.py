"""Imports every built-in check module so that each registers itself in ``CHECKS``.

Modules are discovered (every ``robustlab/checks/*.py`` not starting with ``_``), so adding a check
means adding one file.
"""

from __future__ import annotations

import importlib
import pkgutil

from . import __path__ as _path

for _m in pkgutil.iter_modules(_path):
    if not _m.name.startswith("_") and _m.name != "base":
        importlib.import_module(f"{__package__}.{_m.name}")
