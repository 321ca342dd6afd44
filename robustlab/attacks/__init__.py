"""Adversarial attacks: our own engine (PGD family, APGD with early exit) and adapters to the
reference implementations (pyautoattack, foolbox). Import submodules explicitly, e.g.
``from robustlab.attacks.pgd import PGD``; importing this package does not import torch."""

from __future__ import annotations
