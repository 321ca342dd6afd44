"""The ``integer_attack`` suite entry: the settings of the attacks that are valid on integer
(quantized) variants (:mod:`robustlab.compress.attacks`), validated with the rest of the suite.

The attacks themselves need the full-precision base model (its PGD examples are transferred), so
they run under ``robustlab evaluate --variants`` on each quantized variant, with the settings of
this entry (:mod:`robustlab.pipelines.variants`); in a run without a base (a plain ``evaluate``, the
base model itself, a float variant) the entry is recorded as ``skipped`` with the reason::

    checks:
      - check: integer_attack
        params: {pgd_steps: 50, pgd_restarts: 2, square_queries: 5000}
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SuiteError
from ..scorecard import CheckResult, Status
from .base import CHECKS, Check, Params, RunContext


@dataclass(frozen=True)
class IntegerAttackParams(Params):
    """``pgd_steps``: iterations of each PGD way (whitebox, exact, transfer), step size 2.5 eps /
    steps; ``pgd_restarts``: random restarts of each PGD way (a sample counts as broken if any
    restart breaks it); ``square_queries``: queries of the Square attack per sample."""

    pgd_steps: int = 20
    pgd_restarts: int = 1
    square_queries: int = 1000

    def validate(self) -> None:
        for name, lo, hi in (("pgd_steps", 1, 100_000), ("pgd_restarts", 1, 1000), ("square_queries", 1, 1_000_000)):
            v = getattr(self, name)
            if not lo <= v <= hi:
                raise SuiteError(f"integer_attack.{name} must be between {lo} and {hi}, got {v}.")


@CHECKS.register("integer_attack")
class IntegerAttackCheck(Check[IntegerAttackParams]):
    """Attacks valid on int8 variants (BPDA white-box PGD, exact-gradient PGD, transfer from the
    base, Square; worst case per sample, gradient-masking audit). Runs under ``evaluate --variants``
    only; elsewhere it is recorded as skipped."""

    name = "integer_attack"
    family = "adversarial"
    description = "Attacks valid on int8 variants (BPDA PGD, exact-gradient PGD, transfer from the base, Square); runs under evaluate --variants."
    Params = IntegerAttackParams

    def run(self, ctx: RunContext) -> CheckResult:
        from ..compress.quantize import QuantizedNet

        res = self.new_result()
        res.status = Status.SKIPPED
        if any(isinstance(m, QuantizedNet) for m in ctx.model.modules()):
            res.reason = ("integer_attack transfers from the full-precision base model, which this run does not have; "
                          "run robustlab evaluate --model BASE --variants THIS_FILE")
        else:
            res.reason = "not an integer (quantized) model: its gradients are exact and the suite's own attacks apply; integer_attack runs on int8 variants under evaluate --variants"
        return res


__all__ = ["IntegerAttackCheck", "IntegerAttackParams"]
