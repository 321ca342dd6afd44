"""Importing this module registers robustlab's built-in attacks in ``ATTACKS`` (one file each)."""

from __future__ import annotations

from . import apgd_attacks, autoattack, fab, malt, minimal_norm, pgd, square  # noqa: F401
