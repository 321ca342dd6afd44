"""The template of every fixed-epsilon adversarial check and the audit block they share.

:class:`SweepCheck` sweeps a list of epsilons (default: the data set's standard budget,
:mod:`robustlab.attacks.threat`), attacks per batch through ``attack_batch`` (stored per batch, so an
interrupted run resumes), merges the flags over epsilons (:mod:`.sweep_merge`), reports robust
accuracy with a 95% Wilson interval per epsilon and class, the attack success rate, perturbation
norms and per-sample robust flags, and ends with the validity audit (:func:`model_audit` and
:meth:`SweepCheck.run_audit`, the one copy of the audit block).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence, TypeVar

import numpy as np
import torch

from .. import metric_keys as mk
from ..attacks.base import FixedEpsilonAttack
from ..attacks.recheck import recheck
from ..attacks.scoring import budget_scale_problem, resolve_epsilons
from ..attacks.threat import Norm
from ..audit import adversarial as audit
from ..errors import RobustlabError, SuiteError
from ..stats import wilson_interval
from ..scorecard import AuditItem, CheckResult, Series, Verdict
from ..seeding import derive_seed, sample_seeds
from ..fastpaths import FoldedView, folded_count
from .attack_scoring import add_robustness_metrics, score_batch, seed_scope, standard_definitions, sub
from .base import Check, Params, RunContext, validate_budgets
from .save_examples import ExampleSaver, saving
from .sweep_merge import merge_over_eps


def folded_view_notes(view: Any, *, flipped: int, claimed: int) -> list[str]:
    """The note an attack check writes when its iterations ran on the batch-norm-folded copy
    (:class:`robustlab.fastpaths.FoldedView`), or on the model after that copy fell back; none otherwise."""
    folded = folded_count(view)
    if not folded:
        return []
    if getattr(view, "fell_back", False):
        return ["the copy of the model with its batch norms folded disagreed with the model beyond rounding on its first call; "
                "the attack iterations ran on the model itself."]
    layout = ""
    if getattr(view, "channels_last_in_use", False):
        layout = f", batches of at least {view.channels_last_rows} rows in a channels-last copy of it"
    return [f"attack iterations ran on a copy of the model with {folded} batch norms folded into the convolutions before them{layout} (the same function up to "
            f"float rounding; --no-fold-bn turns it off); clean flags and every verdict come from the model itself: {flipped} of {claimed} adversarial "
            "examples found on the copy were classified correctly by the model, and each of them was attacked again on the model."]


@dataclass(frozen=True)
class SweepParams(Params):
    """Shared parameters: norm, epsilons (default: the data set's standard budget), the primary
    epsilon reported as ``adversarial/<id>/robust_accuracy``, and the audit budget."""

    norm: Norm = Norm.LINF
    epsilons: tuple[float, ...] | None = None
    primary_eps: float | None = None
    audit: bool = True
    audit_samples: int = 64
    per_sample: bool = True

    def validate(self) -> None:
        validate_budgets("", self.epsilons, self.primary_eps)
        if self.audit_samples < 1:
            raise SuiteError(f"audit_samples must be at least 1, got {self.audit_samples}.")


SP = TypeVar("SP", bound=SweepParams)


def bounds_of(ctx: RunContext) -> tuple[float, float]:
    lo, hi = (float(b) for b in ctx.model.bounds)
    return lo, hi


def model_audit(ctx: RunContext, res: CheckResult, check_id: str, correct: np.ndarray, k: int, *, randomness_handled: bool) -> None:
    """Audit items about the model on the first ``k`` points: randomised forward, softmax outputs,
    gradients, accuracy at a very large eps, fp32 clean flags."""
    data, model = ctx.data, ctx.model
    x = data.images(slice(0, k)).to(ctx.device)
    y = data.y[:k].to(ctx.device)
    cc = torch.as_tensor(correct[:k], device=ctx.device)
    res.audit.append(audit.audit_randomness(model, x, handled=randomness_handled))
    res.audit.append(audit.audit_softmax_output(model, x))
    if bool(cc.any()):
        res.audit.append(audit.audit_gradients(model, x[cc], y[cc]))
        ids = [data.ids[i] for i in range(k) if bool(cc[i])]
        res.audit.append(audit.audit_large_eps(model, x[cc], y[cc], bounds=bounds_of(ctx), seeds=sample_seeds(ctx.seed, f"{check_id}/audit/large_eps", ids)))


def finish_audit(res: CheckResult, prefix: str) -> None:
    verdict = audit.overall_verdict(res.audit)
    res.add_metric(sub(prefix, "audit", "verdict"), audit.verdict_code(verdict))
    res.notes.append(f"validity audit verdict: {verdict.value}")


class SweepCheck(Check[SP]):
    """Template: per epsilon and batch, ``attack_batch`` returns per-sample outcomes (stored for
    resume); the base turns them into metrics, series, per-sample flags and the audit."""

    family = "adversarial"
    default_sweep: ClassVar[tuple[float, ...]] = (1.0,)

    def norm(self) -> Norm:
        return self.params.norm

    # -- hooks ------------------------------------------------------------------------------
    def attack(self, *, stronger: bool = False) -> FixedEpsilonAttack:
        """The attack of this check (``stronger``: the audit's stronger variant)."""
        raise NotImplementedError

    def attack_batch(self, ctx: RunContext, x: torch.Tensor, y: torch.Tensor, ids: Sequence[str], eps: float) -> dict[str, Any]:
        seeds = sample_seeds(ctx.seed, f"{self.id}/{seed_scope(eps)}", ids)
        return score_batch(ctx, self.attack(), x, y, eps, seeds, early_stop=bool(getattr(self.params, "early_stop", True)))

    def stronger(self, ctx: RunContext, x: torch.Tensor, y: torch.Tensor, ids: Sequence[str], eps: float) -> tuple[torch.Tensor, str]:
        """Stronger attack for the convergence audit: (x_adv, description)."""
        raise NotImplementedError

    def extra_metrics(self, res: CheckResult, prefix: str, eps: float, o: dict[str, Any], n: int) -> None:
        return None

    def curves(self, outcomes: dict[float, dict[str, Any]], eps_list: list[float], n: int) -> dict[str, list[float | None]]:
        return {self.name: [float(np.mean(outcomes[e]["robust"])) if n else None for e in eps_list]}

    def definitions(self, prefix: str) -> dict[str, str]:
        return {}

    def randomness_handled(self) -> bool:
        return False

    def extra_audit(self, ctx: RunContext, res: CheckResult, outcomes: dict[float, dict[str, Any]], n: int) -> None:
        return None

    # -- the template -----------------------------------------------------------------------
    def run(self, ctx: RunContext) -> CheckResult:
        p = self.params
        norm = self.norm()
        model, data = ctx.model, ctx.data
        eps_list, primary = resolve_epsilons(model, norm, p.epsilons, p.primary_eps, sweep=self.default_sweep)
        res = self.new_result()
        prefix = mk.key("adversarial", mk.legal_segment(self.id))
        scope = ctx.store.scope(self.id, {"check": self.name, **res.params, "resolved_eps": eps_list})
        n, bs = len(data), ctx.batch_size
        y_all = data.y.numpy()
        outcomes: dict[float, dict[str, Any]] = {}
        saver = ExampleSaver(ctx, check_id=self.id, check=self.name, norm=norm, epsilons=eps_list) if saving(ctx) else None
        for eps in eps_list:

            def batch(start: int, stop: int, eps: float = eps) -> dict[str, Any]:
                x = data.images(slice(start, stop)).to(ctx.device)
                yb = data.y[start:stop].to(ctx.device)
                rec = self.attack_batch(ctx, x, yb, data.ids[start:stop], eps)
                x_adv = rec.pop("x_adv", None)  # never stored with the compact result
                if saver is not None and x_adv is not None:
                    saver.write(eps, start, stop, x, yb, x_adv, correct=rec["correct"], success=[bool(c) and not bool(r) for c, r in zip(rec["correct"], rec["robust"])])
                return rec

            parts = ctx.map_batches(f"{scope}|{seed_scope(eps)}", n, batch, batch_size=bs, desc=f"{self.id} {mk.eps_segment(eps)}")
            outcomes[eps] = merge_parts(parts)
            if saver is not None:
                saver.finish(eps, n, batch)
        # a valid adversarial example at a smaller eps lies in every larger ball: worst case per point
        raw_ra = {e: float(np.mean(o["robust"])) if n else math.nan for e, o in outcomes.items()}
        merge_over_eps(outcomes, eps_list)
        correct = np.asarray(outcomes[eps_list[0]]["correct"], dtype=bool)
        res.add_metric(sub(prefix, "clean_accuracy"), float(correct.mean()) if n else math.nan, interval=wilson_interval(int(correct.sum()), n), n=n)
        res.add_metric(sub(prefix, "primary_eps"), primary)
        claimed = rejected = flipped = 0
        for eps, o in outcomes.items():
            robust = np.asarray(o["robust"], dtype=bool)
            nrm = np.asarray([math.inf if v is None else v for v in o["norm"]], dtype=float)
            add_robustness_metrics(res, sub(prefix, mk.eps_segment(eps)), robust=robust, correct=correct, y=y_all, n_classes=len(model.class_names), adv_norms=nrm)
            claimed += int(o["claimed"])
            rejected += int(o["rejected"])
            flipped += int(o.get("flipped", 0))
            if p.per_sample:
                res.per_sample[mk.per_eps("robust", eps)] = robust.tolist()
            self.extra_metrics(res, prefix, eps, o, n)
        # any other attack view is a lower-precision one (bf16 autocast, or a user's): its flips are counted
        bf16 = ctx.fast_model is not None and not isinstance(ctx.fast_model, FoldedView)
        if not bf16:
            res.notes.extend(folded_view_notes(ctx.fast_model, flipped=flipped, claimed=claimed))
        else:
            res.add_metric(sub(prefix, "bf16_flipped"), float(flipped))
            res.notes.append(
                f"attack iterations ran under bf16 autocast; clean flags come from the fp32 model and every adversarial example was re-verified in fp32: "
                f"{flipped} of {claimed} found under bf16 were classified correctly in fp32, and each of them was attacked again in fp32 by the same attack."
            )
            res.definitions[sub(prefix, "bf16_flipped")] = "adversarial examples found under bf16 autocast that the fp32 model classifies correctly (summed over epsilons); each such point was attacked again in fp32."
        prim = np.asarray(outcomes[primary]["robust"], dtype=bool)
        res.add_metric(sub(prefix, "robust_accuracy"), float(prim.mean()) if n else math.nan, interval=wilson_interval(int(prim.sum()), n), n=n)
        res.series["robust_accuracy_vs_eps"] = Series(x=list(eps_list), y=self.curves(outcomes, eps_list, n), x_label=f"epsilon ({norm.value})", y_label="robust accuracy", kind="line")
        if p.per_sample:
            res.per_sample["clean_correct"] = correct.tolist()
        res.definitions.update(standard_definitions(prefix, norm))
        res.definitions[sub(prefix, "primary_eps")] = "the epsilon behind adversarial/<id>/robust_accuracy, in the model's input scale."
        res.definitions["sweep"] = (
            "each epsilon is attacked separately; a point broken at a smaller epsilon counts as broken at every larger one (its adversarial example lies in the larger ball). "
            "Every per-epsilon figure follows these merged flags: perturbation norms are those of the example that breaks the point, AutoAttack's after=ATTACK flags and the "
            "black-box audit are merged the same way. The audit's monotonicity item looks at the separate runs before this."
        )
        res.definitions.update(self.definitions(prefix))
        res.notes.append(f"{self.name}: {norm.value} epsilons {', '.join(f'{e:.4g}' for e in eps_list)} (primary {primary:.4g}) in the model's input scale {tuple(model.bounds)}.")
        problem = budget_scale_problem(model, norm, primary) if p.epsilons else None
        if problem is not None:  # a suite's budget written for another input scale: the attack cannot move the model
            res.audit.append(AuditItem("budget_scale", Verdict.SUSPECT, problem, {"eps": primary, "bounds": [float(b) for b in model.bounds], "norm": norm.value}))
        if p.audit:
            try:
                self.run_audit(ctx, res, outcomes, eps_list, primary, correct, raw_ra, claimed, rejected)
            except RobustlabError:
                raise
            except Exception as exc:  # noqa: BLE001 - the attack's figures are done: an audit the model cannot take must not discard them
                reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
                res.audit.append(AuditItem("audit_not_run", Verdict.SUSPECT,
                                           f"the validity audit stopped with the model's own error ({reason}); the robust accuracy above stands, but its validity "
                                           "is unchecked (the audit's independent passes run on a few points at a time, e.g. batches of 1).", {"error": reason}))
                res.notes.append(f"validity audit not run: {reason}")
        verdict = audit.overall_verdict(res.audit)
        res.add_metric(sub(prefix, "audit", "verdict"), audit.verdict_code(verdict))
        res.definitions[sub(prefix, "audit", "verdict")] = "worst verdict of the validity audit: 0 = valid, 1 = suspect, 2 = invalid (items in the check's audit list)."
        res.notes.append(f"validity audit verdict: {verdict.value}")
        return res

    def run_audit(self, ctx: RunContext, res: CheckResult, outcomes: dict[float, dict[str, Any]], eps_list: list[float], primary: float, correct: np.ndarray, ra: dict[float, float], claimed: int, rejected: int) -> None:
        p = self.params
        data = ctx.data
        n = len(data)
        k = min(n, p.audit_samples)
        model_audit(ctx, res, self.id, correct, k, randomness_handled=self.randomness_handled())
        x = data.images(slice(0, k)).to(ctx.device)
        y = data.y[:k].to(ctx.device)
        res.audit.append(audit.audit_clean_flags(ctx.model, x, y, torch.as_tensor(correct[:k])))
        if len(eps_list) > 1:
            res.audit.append(audit.audit_monotone(ra, n=n))
        res.audit.append(audit.audit_recheck(claimed=claimed, rejected=rejected, reasons={}))
        self.extra_audit(ctx, res, outcomes, n)
        robust_all = [i for i, r in enumerate(outcomes[primary]["robust"]) if r]
        # a seeded random sample of the robust set, so the estimate scales to all of it
        pick = np.random.default_rng(derive_seed(ctx.seed, f"{self.id}/audit/convergence")).permutation(len(robust_all))[: p.audit_samples]
        robust_idx = sorted(robust_all[int(j)] for j in pick)
        if robust_idx:
            xr = data.images(robust_idx).to(ctx.device)
            yr = data.y[robust_idx].to(ctx.device)
            xa, what = self.stronger(ctx, xr, yr, [data.ids[i] for i in robust_idx], primary)
            rc = recheck(ctx.model, xr, xa, yr, primary, self.norm(), bounds_of(ctx))
            res.audit.append(audit.audit_convergence(name="convergence", n_total=n, n_robust=len(robust_all), n_tested=len(robust_idx), broken_by_stronger=int(rc.valid.sum()), what=what))


def merge_parts(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Concatenate per-batch records: lists are joined, counts summed, dicts merged per key."""
    out: dict[str, Any] = {}
    for key in parts[0] if parts else []:
        v0 = parts[0][key]
        if isinstance(v0, list):
            out[key] = [e for p in parts for e in p[key]]
        elif isinstance(v0, dict):
            out[key] = {k: [e for p in parts for e in p[key][k]] if isinstance(v0[k], list) else sum(p[key][k] for p in parts) for k in v0}
        else:
            out[key] = sum(p[key] for p in parts)
    return out
