"""The generic adversarial check: ``check: attack`` runs any registered fixed-epsilon attack.

    - check: attack
      id: square_linf
      params: {attack: square, n_queries: 1000, norm: linf, epsilons: [8/255]}

``attack`` names an entry of :data:`robustlab.attacks.base.ATTACKS` (built-in or a plugin from the
``robustlab.attacks`` entry-point group). The other parameters are the sweep's (``norm``,
``epsilons``, ``primary_eps``, ``audit``, ``audit_samples``, ``per_sample``, ``early_stop``) and the
attack's own keyword-only hyperparameters, validated against its ``__init__`` signature before
any model loads: an unknown name is a one-line error listing the valid ones. Scoring, the epsilon
sweep and the audit are those of every adversarial check (:class:`.adversarial_sweep.SweepCheck`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from ..attacks.apgd import APGD
from ..attacks.base import ATTACKS, FixedEpsilonAttack
from ..attacks.threat import Loss
from ..errors import SuiteError
from ..seeding import derive_seed, sample_seeds
from .adversarial_sweep import SweepCheck, SweepParams, bounds_of
from .attack_scoring import score_batch, seed_scope
from .base import CHECKS, RunContext, coerce_param

#: hyperparameters the check sets itself (from the sweep), never taken from the suite directly.
_FROM_SWEEP = ("norm",)


@dataclass(frozen=True)
class AttackParams(SweepParams):
    attack: str = "pgd"
    early_stop: bool = True
    hyperparameters: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        super().validate()
        cls = attack_class(self.attack)
        if self.norm not in cls.norms_supported:
            raise SuiteError(f"attack {self.attack!r} supports norm {', '.join(n.value for n in cls.norms_supported)}, not {self.norm.value}.")
        self.build()  # the attack's own checks of its hyperparameters, before any model loads

    def build(self, *, run_seed: int | None = None) -> FixedEpsilonAttack:
        """The attack; ``run_seed`` fills a ``seed`` hyperparameter the suite left unset (the draws an attack
        shares across its batch, e.g. Square's squares), so ``--seed`` reaches every random draw."""
        cls = attack_class(self.attack)
        kw = dict(self.hyperparameters)
        if "norm" in cls.hyperparameters():
            kw["norm"] = self.norm
        if run_seed is not None and "seed" in cls.hyperparameters() and "seed" not in kw:
            kw["seed"] = run_seed
        attack = cls(**kw)
        assert isinstance(attack, FixedEpsilonAttack)
        return attack


def attack_class(name: str) -> type[FixedEpsilonAttack]:
    if name not in ATTACKS:
        raise SuiteError(ATTACKS.unknown_message(name))
    cls = ATTACKS.get(name)
    if not issubclass(cls, FixedEpsilonAttack):
        raise SuiteError(f"attack {name!r} is a minimal-norm attack; use check: minimal_norm with attack: {name}.")
    return cls


@CHECKS.register("attack")
class AttackCheck(SweepCheck[AttackParams]):
    """Robust accuracy under any registered fixed-epsilon attack, over epsilons, with the audit.

    The audit's stronger attack is the same attack with new seeds followed by APGD-CE and APGD-DLR
    (100 iterations) on the points it leaves robust. Shapes: data (N, C, H, W) in model bounds.
    References: the attack's own (see its class); Croce & Hein, ICML 2020 for the audit's APGD.
    """

    name = "attack"
    description = "Any registered attack (params: attack: NAME and its hyperparameters): robust accuracy over epsilons with a validity audit."
    Params = AttackParams

    @classmethod
    def parse_params(cls, raw: dict[str, Any] | None, *, where: str = "") -> AttackParams:
        raw = dict(raw or {})
        name = raw.get("attack", AttackParams.attack)
        if not isinstance(name, str):
            raise SuiteError(f"{where}attack.attack must be an attack name, got {name!r}.")
        try:
            acls = attack_class(name)
        except SuiteError as exc:
            raise SuiteError(f"{where}{exc}") from exc
        own = {f.name for f in dataclasses.fields(AttackParams)} - {"hyperparameters"}
        hp = {k: v for k, v in raw.items() if k not in own}
        known = {k: h for k, h in acls.hyperparameters().items() if k not in _FROM_SWEEP}
        unknown = sorted(set(hp) - set(known))
        if unknown:
            valid = sorted(own | set(known))
            raise SuiteError(f"{where}unknown parameter {', '.join(map(repr, unknown))} for attack {name!r}; valid: {', '.join(valid)}.")
        coerced = {k: coerce_param(v, known[k].annotation, f"{where}{name}.{k}") for k, v in hp.items()}
        base = super().parse_params({k: v for k, v in raw.items() if k in own}, where=where)
        assert isinstance(base, AttackParams)
        p = dataclasses.replace(base, hyperparameters=coerced)
        try:
            p.validate()
        except SuiteError as exc:
            raise SuiteError(f"{where}{exc}") from exc
        return p

    def attack(self, *, stronger: bool = False) -> FixedEpsilonAttack:
        return self.params.build()

    def attack_batch(self, ctx: RunContext, x: torch.Tensor, y: torch.Tensor, ids: Sequence[str], eps: float) -> dict[str, Any]:
        seeds = sample_seeds(ctx.seed, f"{self.id}/{seed_scope(eps)}", ids)
        return score_batch(ctx, self.params.build(run_seed=ctx.seed), x, y, eps, seeds, early_stop=self.params.early_stop)

    def stronger(self, ctx: RunContext, x: torch.Tensor, y: torch.Tensor, ids: Sequence[str], eps: float) -> tuple[torch.Tensor, str]:
        stronger_seed = derive_seed(ctx.seed, "stronger")
        seeds = sample_seeds(stronger_seed, f"{self.id}/audit", ids)
        xa = self.params.build(run_seed=stronger_seed).perturb(ctx.model, x, y, eps, seeds=seeds)  # new seeds, the shared one too
        for loss in (Loss.CE, Loss.DLR):
            r = APGD(norm=self.norm(), n_iter=100, loss=loss).run(ctx.model, x, y, eps, seeds=seeds, bounds=bounds_of(ctx))
            xa[r.success] = r.x_adv[r.success]
        return xa, f"{self.params.attack} with new seeds, then APGD-CE and APGD-DLR with 100 iterations"

    def definitions(self, prefix: str) -> dict[str, str]:
        p = self.params
        hp = ", ".join(f"{k}={v}" for k, v in sorted(p.hyperparameters.items())) or "defaults"
        return {"attack": f"registered attack {p.attack!r} ({type(self.attack()).__name__}; {hp}); a point is broken when the attack returns a valid adversarial example (re-checked)."}
