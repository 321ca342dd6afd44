"""Imports every module of ``robustlab.attacks`` so that each built-in attack registers itself in
``ATTACKS``: adding an attack is one new file with one ``@ATTACKS.register`` decorator (modules
whose name starts with ``_`` are skipped)."""

from __future__ import annotations

import importlib
import pkgutil

from . import __path__ as _path

for _m in pkgutil.iter_modules(_path):
    if not _m.name.startswith("_"):
        importlib.import_module(f"{__package__}.{_m.name}")
