"""The ``minimal_norm`` check: minimal adversarial perturbations from one registered
:class:`~robustlab.attacks.base.MinimizationAttack` (FMN, CW-L2, DeepFool, or a plugin): median
minimal norm and the whole robust-accuracy-versus-epsilon curve from one run (robust at eps:
correct and minimal norm > eps).

Shapes: data (N, C, H, W) in model bounds -> per-sample minimal norms (N,).
References: Pintor et al. NeurIPS 2021 (FMN); Carlini & Wagner S&P 2017; Moosavi-Dezfooli et
al. CVPR 2016; foolbox 3.3.4.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import metric_keys as mk
from ..attacks.base import ATTACKS, MinimizationAttack
from ..attacks.scoring import resolve_epsilons
from ..attacks.threat import Norm
from ..errors import SuiteError
from ..stats import wilson_interval
from ..scorecard import CheckResult, Series
from ..seeding import sample_seeds
from .adversarial_sweep import bounds_of, finish_audit, model_audit
from .attack_scoring import add_robustness_metrics, standard_definitions, sub
from .base import CHECKS, Check, Params, RunContext, validate_budgets
from .save_examples import MinimalSaver, saving


@dataclass(frozen=True)
class MinimalNormParams(Params):
    attack: str = "fmn"
    norm: Norm = Norm.L2
    steps: int = 100
    binary_search_steps: int = 9
    epsilons: tuple[float, ...] | None = None
    primary_eps: float | None = None
    curve_points: int = 41
    audit: bool = True
    audit_samples: int = 64
    per_sample: bool = True

    def validate(self) -> None:
        if self.attack not in ATTACKS:
            raise SuiteError(ATTACKS.unknown_message(self.attack))
        cls = ATTACKS.get(self.attack)
        if not issubclass(cls, MinimizationAttack):
            minimal = [n for n, c in ATTACKS.items() if issubclass(c, MinimizationAttack)]
            raise SuiteError(f"minimal_norm.attack must be a minimal-norm attack ({', '.join(minimal)}), got {self.attack!r}.")
        if self.norm not in cls.norms_supported:
            raise SuiteError(f"minimal_norm: {self.attack} supports norm {', '.join(n.value for n in cls.norms_supported)}; set norm accordingly or use attack: fmn / deepfool for Linf.")
        if self.steps < 1 or self.binary_search_steps < 1 or self.curve_points < 2:
            raise SuiteError("minimal_norm: steps and binary_search_steps must be >= 1 and curve_points >= 2.")
        validate_budgets("minimal_norm.", self.epsilons, self.primary_eps)

    def build(self) -> MinimizationAttack:
        cls = ATTACKS.get(self.attack)
        offered: dict[str, Any] = {"norm": self.norm, "steps": self.steps, "binary_search_steps": self.binary_search_steps}
        attack = cls(**{k: v for k, v in offered.items() if k in cls.hyperparameters()})
        assert isinstance(attack, MinimizationAttack)
        return attack


@CHECKS.register("minimal_norm")
class MinimalNormCheck(Check[MinimalNormParams]):
    """Minimal-norm attack: median minimal norm and robust accuracy at every epsilon from one run."""

    name = "minimal_norm"
    family = "adversarial"
    description = "Minimal-norm attack (fmn / cw_l2 / deepfool): median minimal perturbation and the robust-accuracy-vs-epsilon curve."
    Params = MinimalNormParams

    def run(self, ctx: RunContext) -> CheckResult:
        p = self.params
        norm = p.norm
        model, data = ctx.model, ctx.data
        eps_list, primary = resolve_epsilons(model, norm, p.epsilons, p.primary_eps)
        res = self.new_result()
        prefix = mk.key("adversarial", mk.legal_segment(self.id))
        scope = ctx.store.scope(self.id, {"check": self.name, **res.params})
        n, bs = len(data), ctx.batch_size
        attack = p.build()
        saver = MinimalSaver(ctx, check_id=self.id, check=self.name, norm=norm, epsilons=eps_list) if saving(ctx) else None

        def batch(start: int, stop: int) -> dict[str, Any]:
            x = data.images(slice(start, stop)).to(ctx.device)
            yb = data.y[start:stop].to(ctx.device)
            r = attack(model, x, yb, seeds=sample_seeds(ctx.seed, f"{self.id}/minimal", data.ids[start:stop]), bounds=bounds_of(ctx))
            if saver is not None:  # written before the batch's result is stored (--resume finds it)
                saver.write(start, stop, x, yb, r.x_adv, r.min_norm)
            return {"min_norm": [None if not math.isfinite(v) else float(v) for v in r.min_norm.tolist()]}

        mins: list[float] = []
        for part in ctx.map_batches(scope, n, batch, batch_size=bs, desc=self.id):
            mins.extend(math.inf if v is None else v for v in part["min_norm"])
        if saver is not None:
            saver.finish(n, batch)
        mn_arr = np.asarray(mins, dtype=float)
        correct = mn_arr > 0
        y_all = data.y.numpy()
        res.add_metric(sub(prefix, "clean_accuracy"), float(correct.mean()) if n else math.nan, interval=wilson_interval(int(correct.sum()), n), n=n)
        res.add_metric(sub(prefix, "median_min_norm"), float(np.median(mn_arr)) if n else math.nan, n=n)
        if correct.any():
            res.add_metric(sub(prefix, "median_min_norm_given_clean_correct"), float(np.median(mn_arr[correct])), n=int(correct.sum()))
            found = correct & np.isfinite(mn_arr)
            res.add_metric(sub(prefix, "attack_success_rate"), float(found.sum() / correct.sum()), interval=wilson_interval(int(found.sum()), int(correct.sum())), n=int(correct.sum()))
        for eps in eps_list:
            robust = mn_arr > eps
            add_robustness_metrics(res, sub(prefix, mk.eps_segment(eps)), robust=robust, correct=correct, y=y_all, n_classes=len(model.class_names))
            if p.per_sample:
                res.per_sample[mk.per_eps("robust", eps)] = robust.tolist()
        prim = mn_arr > primary
        res.add_metric(sub(prefix, "robust_accuracy"), float(prim.mean()) if n else math.nan, interval=wilson_interval(int(prim.sum()), n), n=n)
        res.add_metric(sub(prefix, "primary_eps"), primary)
        finite = mn_arr[np.isfinite(mn_arr)]
        top = max(2 * max(eps_list), float(finite.max()) if finite.size else 0.0)
        grid = [top * i / (p.curve_points - 1) for i in range(p.curve_points)]
        res.series["robust_accuracy_vs_eps"] = Series(x=grid, y={p.attack: [float((mn_arr > e).mean()) if n else None for e in grid]}, x_label=f"epsilon ({norm.value})", y_label="robust accuracy", kind="line")
        if p.per_sample:
            res.per_sample["min_norm"] = [None if not math.isfinite(v) else float(v) for v in mn_arr]
        res.definitions.update(standard_definitions(prefix, norm))
        res.definitions.update({
            sub(prefix, "median_min_norm"): f"median over all n points of the smallest {norm.value} perturbation found by {p.attack} (re-checked misclassified, in bounds); clean errors count 0, points the attack could not break count +inf.",
            sub(prefix, "median_min_norm_given_clean_correct"): "the same median over the clean-correct points only.",
            f"{prefix}/{mk.EPS_ANY}/robust_accuracy": "fraction of all n points that are correct and whose minimal perturbation exceeds eps (an upper bound on the true robust accuracy: the attack may miss smaller perturbations).",
            "per_sample min_norm": "minimal perturbation norm per point (0 for clean errors, null when none was found).",
        })
        if p.audit:
            model_audit(ctx, res, self.id, correct, min(n, p.audit_samples), randomness_handled=False)
        finish_audit(res, prefix)
        return res
