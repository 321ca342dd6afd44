"""Imports every built-in check module so that each registers itself in ``CHECKS``.

Discovery is the registry's one way (:func:`robustlab.registry.import_submodules`): every public
module of ``robustlab/checks/`` is imported, so adding a check means adding one file.
"""

from __future__ import annotations

from ..registry import import_submodules

import_submodules(__package__ or "robustlab.checks")
