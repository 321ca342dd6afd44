"""The ``malt`` check: robust accuracy under MALT (targeted APGD on linearly-ranked targets).

An addition to AutoAttack, never a replacement: MALT is cheaper (5 targets, no FAB-T or Square) and
the paper reports it matching AutoAttack's successes, but a release decision should rest on the
``autoattack`` check; bench/attacks.py measures how often MALT misses a point AutoAttack breaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from ..attacks.apgd import APGD
from ..attacks.base import FixedEpsilonAttack
from ..attacks.malt import MALT
from ..attacks.threat import Loss
from ..errors import SuiteError
from ..seeding import derive_seed, sample_seeds
from .adversarial_sweep import SweepCheck, SweepParams, bounds_of
from .base import CHECKS, RunContext


@dataclass(frozen=True)
class MALTParams(SweepParams):
    n_iter: int = 100
    n_targets: int = 5
    candidates: int = 100
    apgd_ce: bool = True

    def validate(self) -> None:
        super().validate()
        if self.n_iter < 1 or self.n_targets < 1 or self.candidates < 1:
            raise SuiteError("malt.n_iter, malt.n_targets and malt.candidates must be at least 1 (defaults 100, 5, 100).")


@CHECKS.register("malt")
class MALTCheck(SweepCheck[MALTParams]):
    """Robust accuracy under MALT (Linf or L2), at the standard budget by default, with the audit.

    References: Melamed, Yehudai & Shamir, NeurIPS 2024; APGD as in Croce & Hein, ICML 2020.
    """

    name = "malt"
    description = "MALT (linearised target ranking + targeted APGD) robust accuracy: a fast addition to AutoAttack, with a validity audit."
    Params = MALTParams

    def attack(self, *, stronger: bool = False) -> FixedEpsilonAttack:
        p = self.params
        if stronger:
            return MALT(norm=self.norm(), n_iter=2 * p.n_iter, n_targets=p.n_targets + 4, candidates=p.candidates, apgd_ce=True)
        return MALT(norm=self.norm(), n_iter=p.n_iter, n_targets=p.n_targets, candidates=p.candidates, apgd_ce=p.apgd_ce)

    def stronger(self, ctx: RunContext, x: torch.Tensor, y: torch.Tensor, ids: Sequence[str], eps: float) -> tuple[torch.Tensor, str]:
        p = self.params
        seeds = sample_seeds(derive_seed(ctx.seed, "stronger"), f"{self.id}/audit", ids)
        xa = self.attack(stronger=True).perturb(ctx.model, x, y, eps, seeds=seeds)
        r = APGD(norm=self.norm(), n_iter=2 * p.n_iter, loss=Loss.DLR).run(ctx.model, x, y, eps, seeds=seeds, bounds=bounds_of(ctx))
        xa[r.success] = r.x_adv[r.success]
        return xa, f"MALT with {2 * p.n_iter} iterations and {p.n_targets + 4} targets, and APGD-DLR with {2 * p.n_iter} iterations"

    def definitions(self, prefix: str) -> dict[str, str]:
        p = self.params
        return {"attack": (
            f"MALT (Melamed et al. 2024): APGD-CE ({'on' if p.apgd_ce else 'off'}), then targeted APGD (DLR-T loss, {p.n_iter} iterations) on the "
            f"{p.n_targets} classes (of the {p.candidates} highest logits) with the smallest linearised boundary distance "
            "(z_y - z_c) / ||grad z_y - grad z_c||_* at x; a point is broken if any target gives a valid adversarial example. "
            "Complements AutoAttack; it does not replace it.")}
