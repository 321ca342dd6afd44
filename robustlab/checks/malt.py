"""The ``malt`` check: robust accuracy under MALT (targeted APGD on linearly-ranked targets).

An addition to AutoAttack, never a replacement: MALT is cheaper (5 targets, no FAB-T or Square) and
the paper reports it matching AutoAttack's successes, but a release decision should rest on the
``autoattack`` check; bench/attacks.py measures how often MALT misses a point AutoAttack breaks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from ..attacks.apgd import APGD
from ..attacks.malt import MALT
from ..attacks.scoring import eps_key
from ..errors import SuiteError
from ..seeding import derive_seed, sample_seeds
from .adversarial import SweepParams, _score, _SweepCheck
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
class MALTCheck(_SweepCheck):
    """Robust accuracy under MALT (Linf or L2), at the standard budget by default, with the audit.

    References: Melamed, Yehudai & Shamir, NeurIPS 2024; APGD as in Croce & Hein, ICML 2020.
    """

    name = "malt"
    description = "MALT (linearised target ranking + targeted APGD) robust accuracy: a fast addition to AutoAttack, with a validity audit."
    Params = MALTParams

    def attack_batch(self, ctx: RunContext, x: torch.Tensor, y: torch.Tensor, ids: Sequence[str], eps: float) -> dict[str, Any]:
        p: MALTParams = self.params  # type: ignore[assignment]
        seeds = sample_seeds(ctx.seed, f"{self.id}/{eps_key(eps)}", ids)
        attack = MALT(norm=self.norm(), n_iter=p.n_iter, n_targets=p.n_targets, candidates=p.candidates, apgd_ce=p.apgd_ce)
        return _score(ctx, attack, x, y, eps, seeds)

    def stronger(self, ctx: RunContext, x: torch.Tensor, y: torch.Tensor, ids: Sequence[str], eps: float) -> tuple[torch.Tensor, str]:
        p: MALTParams = self.params  # type: ignore[assignment]
        seeds = sample_seeds(derive_seed(ctx.seed, "stronger"), f"{self.id}/audit", ids)
        xa = MALT(norm=self.norm(), n_iter=2 * p.n_iter, n_targets=p.n_targets + 4, candidates=p.candidates, apgd_ce=True).perturb(ctx.model, x, y, eps, seeds=seeds)
        r = APGD(norm=self.norm(), n_iter=2 * p.n_iter, loss="dlr").run(ctx.model, x, y, eps, seeds=seeds, bounds=tuple(float(b) for b in ctx.model.bounds))  # type: ignore[arg-type]
        xa[r.success] = r.x_adv[r.success]
        return xa, f"MALT with {2 * p.n_iter} iterations and {p.n_targets + 4} targets, and APGD-DLR with {2 * p.n_iter} iterations"

    def definitions(self, prefix: str) -> dict[str, str]:
        p: MALTParams = self.params  # type: ignore[assignment]
        return {"attack": (
            f"MALT (Melamed et al. 2024): APGD-CE ({'on' if p.apgd_ce else 'off'}), then targeted APGD (DLR-T loss, {p.n_iter} iterations) on the "
            f"{p.n_targets} classes (of the {p.candidates} highest logits) with the smallest linearised boundary distance "
            "(z_y - z_c) / ||grad z_y - grad z_c||_* at x; a point is broken if any target gives a valid adversarial example. "
            "Complements AutoAttack; it does not replace it.")}
