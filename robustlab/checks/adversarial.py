"""Adversarial robustness checks with a fixed-epsilon attack: ``pgd``, ``fgsm`` and ``autoattack``.

Each is a :class:`~robustlab.checks.adversarial_sweep.SweepCheck` (the sweep, scoring and audit
template) that names its attack; the generic ``attack`` check (:mod:`robustlab.checks.attack`)
runs any registered attack the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from .. import metric_keys as mk
from ..attacks.apgd import APGD
from ..attacks.autoattack import DLR_MEMBER_CLASSES, AAEngine, AAVersion, attacks_of, dlr_short_of, run_autoattack
from ..attacks.base import FixedEpsilonAttack
from ..attacks.geometry import norms
from ..attacks.pgd import FGSM, PGD
from ..attacks.threat import Loss
from ..audit import adversarial as audit
from ..errors import SuiteError
from ..stats import wilson_interval
from ..scorecard import CheckResult
from ..seeding import derive_seed, sample_seeds
from .adversarial_sweep import SweepCheck, SweepParams, bounds_of
from .attack_scoring import seed_scope, sub
from .base import CHECKS, RunContext


@dataclass(frozen=True)
class PGDParams(SweepParams):
    steps: int = 40
    rel_stepsize: float | None = None  # default 2.5 / steps (Madry et al. 2018)
    abs_stepsize: float | None = None
    restarts: int = 1
    random_start: bool = True
    loss: Loss = Loss.CE
    early_stop: bool = True

    def validate(self) -> None:
        super().validate()
        if self.steps < 1 or self.steps > 100000:
            raise SuiteError(f"pgd.steps must be between 1 and 100000, got {self.steps}.")
        if self.restarts < 1:
            raise SuiteError(f"pgd.restarts must be at least 1, got {self.restarts}.")
        for k in ("rel_stepsize", "abs_stepsize"):
            v = getattr(self, k)
            if v is not None and v <= 0:
                raise SuiteError(f"pgd.{k} must be positive, got {v}.")
        if self.loss is Loss.DLR_TARGETED:
            raise SuiteError("pgd.loss must be ce, dlr or margin.")


@dataclass(frozen=True)
class FGSMParams(SweepParams):
    random_start: bool = False


@dataclass(frozen=True)
class AutoAttackParams(SweepParams):
    version: AAVersion = AAVersion.STANDARD
    engine: AAEngine = AAEngine.FAST
    n_iter: int = 100
    square_queries: int = 5000

    def validate(self) -> None:
        super().validate()
        if self.n_iter < 1 or self.square_queries < 1:
            raise SuiteError("autoattack.n_iter and autoattack.square_queries must be at least 1 (AutoAttack uses 100 and 5000).")


@CHECKS.register("pgd")
class PGDCheck(SweepCheck[PGDParams]):
    """Robust accuracy under PGD (Linf or L2) with random start and restarts, over epsilons.

    Default sweep: (0.25, 0.5, 1, 2) x the standard budget; primary = the standard budget. Step
    size: ``abs_stepsize`` or ``rel_stepsize * eps`` (default rel 2.5 / steps, Madry et al.).
    Shapes: data (N, C, H, W) in model bounds.
    References: Madry et al., ICLR 2018; checked against foolbox 3.3.4 LinfPGD/L2PGD (tests).
    """

    name = "pgd"
    description = "PGD (Linf/L2) robust accuracy over epsilons, with restarts, per class, and a validity audit."
    Params = PGDParams
    default_sweep = (0.25, 0.5, 1.0, 2.0)

    def attack(self, *, stronger: bool = False) -> FixedEpsilonAttack:
        p = self.params
        steps = p.steps * (2 if stronger else 1)
        return PGD(norm=self.norm(), steps=steps, rel_stepsize=p.rel_stepsize if p.rel_stepsize is not None else 2.5 / steps, abs_stepsize=p.abs_stepsize, random_start=p.random_start, restarts=p.restarts + (1 if stronger else 0), loss=p.loss)

    def stronger(self, ctx: RunContext, x: torch.Tensor, y: torch.Tensor, ids: Sequence[str], eps: float) -> tuple[torch.Tensor, str]:
        p = self.params
        seeds = sample_seeds(ctx.seed, f"{self.id}/audit/stronger", ids)
        return self.attack(stronger=True).perturb(ctx.model, x, y, eps, seeds=seeds), f"PGD with {2 * p.steps} steps and {p.restarts + 1} restarts"

    def definitions(self, prefix: str) -> dict[str, str]:
        return {"attack": "PGD: projected signed (Linf) or normalised (L2) gradient ascent on the loss from a uniform random start in the ball; a point counts as broken if any restart finds a valid adversarial example."}


@CHECKS.register("fgsm")
class FGSMCheck(SweepCheck[FGSMParams]):
    """Robust accuracy under FGSM (Linf) / FGM (L2), one step of size eps, over epsilons.

    A single-step attack gives an optimistic (upper-bound) robust accuracy: the audit's
    convergence item compares with 10-step PGD.
    References: Goodfellow et al., ICLR 2015; foolbox 3.3.4 LinfFastGradientAttack.
    """

    name = "fgsm"
    description = "FGSM / FGM robust accuracy over epsilons (an optimistic bound), with a validity audit."
    Params = FGSMParams
    default_sweep = (0.25, 0.5, 1.0, 2.0)

    def attack(self, *, stronger: bool = False) -> FixedEpsilonAttack:
        return PGD(norm=self.norm(), steps=10, rel_stepsize=0.25) if stronger else FGSM(norm=self.norm(), random_start=self.params.random_start)

    def stronger(self, ctx: RunContext, x: torch.Tensor, y: torch.Tensor, ids: Sequence[str], eps: float) -> tuple[torch.Tensor, str]:
        seeds = sample_seeds(ctx.seed, f"{self.id}/audit/stronger", ids)
        return self.attack(stronger=True).perturb(ctx.model, x, y, eps, seeds=seeds), "PGD with 10 steps"


@CHECKS.register("autoattack")
class AutoAttackCheck(SweepCheck[AutoAttackParams]):
    """AutoAttack robust accuracy (``standard``: APGD-CE, APGD-T, FAB-T, Square; ``rand``: APGD-CE,
    APGD-DLR with EOT 20), Linf or L2, at the standard budget by default.

    ``engine: fast`` uses robustlab's APGD with early exit (same flags as the reference, less
    work); ``engine: reference`` runs pyautoattack's code and gives the reference's flags exactly
    (seeded with the run seed). Reported per attack as the cumulative robust accuracy after it.
    References: Croce & Hein, ICML 2020; pyautoattack 0.2.0 (tests compare flags).
    """

    name = "autoattack"
    description = "AutoAttack (standard / rand, Linf / L2) robust accuracy with per-attack breakdown and a validity audit."
    Params = AutoAttackParams

    def randomness_handled(self) -> bool:
        return self.params.version is AAVersion.RAND

    def attack_batch(self, ctx: RunContext, x: torch.Tensor, y: torch.Tensor, ids: Sequence[str], eps: float) -> dict[str, Any]:
        p = self.params
        seeds = sample_seeds(ctx.seed, f"{self.id}/{seed_scope(eps)}", ids)
        r = run_autoattack(ctx.model, x, y, attack_model=ctx.fast_model, eps=eps, norm=self.norm(), version=p.version, engine=p.engine, seed=ctx.seed, seeds=seeds, batch_size=max(len(ids), 1), n_iter=p.n_iter, square_queries=p.square_queries)
        nrm = norms(r.x_adv - x, self.norm())
        broken = r.clean_correct & ~r.robust
        return {
            "correct": r.clean_correct.cpu().tolist(),
            "robust": r.robust.cpu().tolist(),
            "norm": [float(v) if b else None for v, b in zip(nrm.cpu().tolist(), broken.cpu().tolist())],
            "claimed": r.claimed,
            "rejected": r.rejected,
            "flipped": r.flipped,
            "after": {a: f.cpu().tolist() for a, f in r.robust_after.items()},
            "fooled_by": r.fooled_by,
            "x_adv": r.x_adv,  # removed before the record is stored
        }

    def extra_metrics(self, res: CheckResult, prefix: str, eps: float, o: dict[str, Any], n: int) -> None:
        for a, flags in o.get("after", {}).items():
            k = int(np.sum(flags))
            res.add_metric(sub(prefix, mk.eps_segment(eps), mk.after_segment(a), "robust_accuracy"), k / n if n else math.nan, interval=wilson_interval(k, n), n=n)
        if self.params.per_sample:
            res.per_sample[mk.per_eps("fooled_by", eps)] = list(o.get("fooled_by", []))

    def curves(self, outcomes: dict[float, dict[str, Any]], eps_list: list[float], n: int) -> dict[str, list[float | None]]:
        out = super().curves(outcomes, eps_list, n)
        for a in attacks_of(self.params.version):
            out[f"after {a}"] = [float(np.mean(outcomes[e]["after"][a])) if n and a in outcomes[e].get("after", {}) else None for e in eps_list]
        return out

    def definitions(self, prefix: str) -> dict[str, str]:
        p = self.params
        return {
            f"{prefix}/{mk.EPS_ANY}/{mk.after_segment('ATTACK')}/robust_accuracy": "robust accuracy after running the attacks up to and including ATTACK, each only on the points still robust (cumulative worst case, AutoAttack's order).",
            "attack": f"AutoAttack {p.version.value} ({', '.join(attacks_of(p.version))}), APGD {p.n_iter} iterations, Square {p.square_queries} queries, engine {p.engine.value}, reference attacks seeded with the run seed.",
            "per_sample fooled_by/eps_E": "name of the attack that first broke each point ('clean' for clean errors, '' for robust points).",
        }

    def extra_audit(self, ctx: RunContext, res: CheckResult, outcomes: dict[float, dict[str, Any]], n: int) -> None:
        k = getattr(getattr(ctx.model, "info", None), "num_classes", None)
        for a in dlr_short_of(attacks_of(self.params.version), k if isinstance(k, int) else None):
            res.notes.append(f"The model has {k} classes and {a}'s DLR loss needs {DLR_MEMBER_CLASSES[a]} (Croce & Hein divide by the gap to the third "
                             "largest logit, targeted to the mean of the third and fourth): its loss was the logit margin, the DLR loss's numerator.")
        if self.params.version is not AAVersion.STANDARD:
            return
        for eps, o in outcomes.items():
            after = o.get("after", {})
            if "square" in after and "fab-t" in after:
                item = audit.audit_black_box(n=n, robust_white=int(np.sum(after["fab-t"])), robust_after_black=int(np.sum(after["square"])))
                res.audit.append(type(item)(mk.per_eps(item.name, eps), item.verdict, item.message, item.evidence))

    def stronger(self, ctx: RunContext, x: torch.Tensor, y: torch.Tensor, ids: Sequence[str], eps: float) -> tuple[torch.Tensor, str]:
        p = self.params
        seeds = sample_seeds(derive_seed(ctx.seed, "stronger"), f"{self.id}/audit", ids)
        rand = p.version is AAVersion.RAND
        xa = x.clone()
        for loss in (Loss.CE, Loss.DLR):
            r = APGD(norm=self.norm(), n_iter=2 * p.n_iter, loss=loss, eot_iter=20 if rand else 1).run(ctx.model, x, y, eps, seeds=seeds, bounds=bounds_of(ctx))
            xa[r.success] = r.x_adv[r.success]
        return xa, f"APGD-CE and APGD-DLR with {2 * p.n_iter} iterations and new random starts"
