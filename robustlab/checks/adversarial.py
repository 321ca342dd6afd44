"""Adversarial robustness checks: ``pgd``, ``fgsm``, ``autoattack`` and ``minimal_norm``.

Every check sweeps a list of epsilons (default: the data set's standard budget, see
:mod:`robustlab.attacks.scoring`), re-checks every returned adversarial example itself, reports
robust accuracy with a 95% Wilson interval per epsilon (and per attack for AutoAttack, as the
cumulative worst case), per class, the attack success rate, perturbation norms and per-sample
robust flags, and ends with a validity audit (:mod:`robustlab.audit.adversarial`). Work is stored
per batch (``ctx.store``) so an interrupted run resumes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence

import numpy as np
import torch

from ..attacks.apgd import APGD
from ..attacks.autoattack import AAEngine, AAVersion, attacks_of, run_autoattack
from ..attacks.base import Attack, Loss, Norm
from ..attacks.minimal_norm import MinNormAttack, minimal_perturbation
from ..attacks.pgd import FGSM, PGD
from ..attacks.scoring import add_robustness_metrics, eps_key, recheck, resolve_epsilons, standard_definitions
from ..attacks.verified import verified_perturb
from ..audit import adversarial as audit
from ..errors import SuiteError
from ..metrics.stats import wilson_interval
from ..scorecard import CheckResult, Series
from ..seeding import derive_seed, sample_seeds
from .base import CHECKS, Check, Params, RunContext
from .sweep_merge import merge_over_eps


def _enum(cls: Any, value: str, what: str) -> Any:
    try:
        return cls.parse(value) if hasattr(cls, "parse") else cls(value)
    except (ValueError, SuiteError) as exc:
        raise SuiteError(f"{what} must be one of {', '.join(m.value for m in cls)}, got {value!r}.") from exc


@dataclass(frozen=True)
class SweepParams(Params):
    """Shared parameters: norm, epsilons (default: the data set's standard budget), the primary
    epsilon reported as ``adversarial/<id>/robust_accuracy``, and the audit budget."""

    norm: str = "linf"
    epsilons: tuple[float, ...] | None = None
    primary_eps: float | None = None
    audit: bool = True
    audit_samples: int = 64
    per_sample: bool = True

    def validate(self) -> None:
        _enum(Norm, self.norm, "norm")
        if self.epsilons is not None and (not self.epsilons or any(e <= 0 or not math.isfinite(e) for e in self.epsilons)):
            raise SuiteError(f"epsilons must be a non-empty list of positive numbers (e.g. [2/255, 8/255]), got {self.epsilons}.")
        if self.primary_eps is not None and self.primary_eps <= 0:
            raise SuiteError(f"primary_eps must be positive, got {self.primary_eps}.")
        if self.audit_samples < 1:
            raise SuiteError(f"audit_samples must be at least 1, got {self.audit_samples}.")


@dataclass(frozen=True)
class PGDParams(SweepParams):
    steps: int = 40
    rel_stepsize: float | None = None  # default 2.5 / steps (Madry et al. 2018)
    abs_stepsize: float | None = None
    restarts: int = 1
    random_start: bool = True
    loss: str = "ce"
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
        _enum(Loss, self.loss, "pgd.loss")


@dataclass(frozen=True)
class FGSMParams(SweepParams):
    random_start: bool = False


@dataclass(frozen=True)
class AutoAttackParams(SweepParams):
    version: str = "standard"
    engine: str = "fast"
    n_iter: int = 100
    square_queries: int = 5000

    def validate(self) -> None:
        super().validate()
        _enum(AAVersion, self.version, "autoattack.version")
        _enum(AAEngine, self.engine, "autoattack.engine")
        if self.n_iter < 1 or self.square_queries < 1:
            raise SuiteError("autoattack.n_iter and autoattack.square_queries must be at least 1 (AutoAttack uses 100 and 5000).")


class _SweepCheck(Check):
    """Template: per epsilon and batch, ``attack_batch`` returns per-sample outcomes (stored for
    resume); the base turns them into metrics, series, per-sample flags and the audit."""

    family = "adversarial"
    default_sweep: ClassVar[tuple[float, ...]] = (1.0,)

    def norm(self) -> Norm:
        return Norm.parse(self.params.norm)  # type: ignore[attr-defined]

    def attack_batch(self, ctx: RunContext, x: torch.Tensor, y: torch.Tensor, ids: Sequence[str], eps: float) -> dict[str, Any]:
        raise NotImplementedError

    def stronger(self, ctx: RunContext, x: torch.Tensor, y: torch.Tensor, ids: Sequence[str], eps: float) -> tuple[torch.Tensor, str]:
        """Stronger attack for the convergence audit: (x_adv, description)."""
        raise NotImplementedError

    def run(self, ctx: RunContext) -> CheckResult:
        p: SweepParams = self.params  # type: ignore[assignment]
        norm = self.norm()
        model, data = ctx.model, ctx.data
        eps_list, primary = resolve_epsilons(model, norm, p.epsilons, p.primary_eps, sweep=self.default_sweep)
        res = self.new_result()
        prefix = f"adversarial/{self.id}"
        scope = ctx.store.scope(self.id, {"check": self.name, **res.params, "resolved_eps": eps_list})
        n, bs = len(data), ctx.batch_size
        y_all = data.y.numpy()
        outcomes: dict[float, dict[str, Any]] = {}
        for eps in eps_list:

            def batch(start: int, stop: int, eps: float = eps) -> dict[str, Any]:
                x = data.images(slice(start, stop)).to(ctx.device)
                yb = data.y[start:stop].to(ctx.device)
                return self.attack_batch(ctx, x, yb, data.ids[start:stop], eps)

            parts = ctx.map_batches(f"{scope}|{eps_key(eps)}", n, batch, batch_size=bs, desc=f"{self.id} {eps_key(eps)}")
            outcomes[eps] = _merge(parts)
        # a valid adversarial example at a smaller eps lies in every larger ball: worst case per point
        raw_ra = {e: float(np.mean(o["robust"])) if n else math.nan for e, o in outcomes.items()}
        merge_over_eps(outcomes, eps_list)
        correct = np.asarray(outcomes[eps_list[0]]["correct"], dtype=bool)
        res.add_metric(f"{prefix}/clean_accuracy", float(correct.mean()) if n else math.nan, interval=wilson_interval(int(correct.sum()), n), n=n)
        res.add_metric(f"{prefix}/primary_eps", primary)
        ra: dict[float, float] = {}
        claimed = rejected = flipped = 0
        for eps, o in outcomes.items():
            robust = np.asarray(o["robust"], dtype=bool)
            nrm = np.asarray([math.inf if v is None else v for v in o["norm"]], dtype=float)
            add_robustness_metrics(res, f"{prefix}/{eps_key(eps)}", robust=robust, correct=correct, y=y_all, class_names=model.class_names, adv_norms=nrm)
            ra[eps] = float(robust.mean()) if n else math.nan
            claimed += int(o["claimed"])
            rejected += int(o["rejected"])
            flipped += int(o.get("flipped", 0))
            if p.per_sample:
                res.per_sample[f"robust@{eps_key(eps)}"] = robust.tolist()
            self.extra_metrics(res, prefix, eps, o, n)
        if ctx.fast_model is not None:
            res.add_metric(f"{prefix}/bf16_flipped", float(flipped))
            res.notes.append(
                f"attack iterations ran under bf16 autocast; clean flags come from the fp32 model and every adversarial example was re-verified in fp32: "
                f"{flipped} of {claimed} found under bf16 were classified correctly in fp32, and each of them was attacked again in fp32 by the same attack."
            )
            res.definitions[f"{prefix}/bf16_flipped"] = "adversarial examples found under bf16 autocast that the fp32 model classifies correctly (summed over epsilons); each such point was attacked again in fp32."
        prim = np.asarray(outcomes[primary]["robust"], dtype=bool)
        res.add_metric(f"{prefix}/robust_accuracy", float(prim.mean()) if n else math.nan, interval=wilson_interval(int(prim.sum()), n), n=n)
        res.series["robust_accuracy_vs_eps"] = Series(x=list(eps_list), y=self.curves(outcomes, eps_list, n), x_label=f"epsilon ({norm.value})", y_label="robust accuracy", kind="line")
        if p.per_sample:
            res.per_sample["clean_correct"] = correct.tolist()
        res.definitions.update(standard_definitions(prefix, norm))
        res.definitions[f"{prefix}/primary_eps"] = "the epsilon behind adversarial/<id>/robust_accuracy, in the model's input scale."
        res.definitions["sweep"] = (
            "each epsilon is attacked separately; a point broken at a smaller epsilon counts as broken at every larger one (its adversarial example lies in the larger ball). "
            "Every per-epsilon figure follows these merged flags: perturbation norms are those of the example that breaks the point, AutoAttack's after=ATTACK flags and the "
            "black-box audit are merged the same way. The audit's monotonicity item looks at the separate runs before this."
        )
        res.definitions.update(self.definitions(prefix))
        res.notes.append(f"{self.name}: {norm.value} epsilons {', '.join(f'{e:.4g}' for e in eps_list)} (primary {primary:.4g}) in the model's input scale {tuple(model.bounds)}.")
        if p.audit:
            self.run_audit(ctx, res, outcomes, eps_list, primary, correct, raw_ra, claimed, rejected)
        verdict = audit.overall_verdict(res.audit)
        res.add_metric(f"{prefix}/audit/verdict", audit.verdict_code(verdict))
        res.definitions[f"{prefix}/audit/verdict"] = "worst verdict of the validity audit: 0 = valid, 1 = suspect, 2 = invalid (items in the check's audit list)."
        res.notes.append(f"validity audit verdict: {verdict.value}")
        return res

    # -- hooks ------------------------------------------------------------------------------
    def extra_metrics(self, res: CheckResult, prefix: str, eps: float, o: dict[str, Any], n: int) -> None:
        return None

    def curves(self, outcomes: dict[float, dict[str, Any]], eps_list: list[float], n: int) -> dict[str, list[float | None]]:
        return {self.name: [float(np.mean(outcomes[e]["robust"])) if n else None for e in eps_list]}

    def definitions(self, prefix: str) -> dict[str, str]:
        return {}

    def randomness_handled(self) -> bool:
        return False

    # -- audit ------------------------------------------------------------------------------
    def run_audit(self, ctx: RunContext, res: CheckResult, outcomes: dict[float, dict[str, Any]], eps_list: list[float], primary: float, correct: np.ndarray, ra: dict[float, float], claimed: int, rejected: int) -> None:
        p: SweepParams = self.params  # type: ignore[assignment]
        model, data = ctx.model, ctx.data
        n = len(data)
        bounds = tuple(float(b) for b in model.bounds)
        k = min(n, p.audit_samples)
        x = data.images(slice(0, k)).to(ctx.device)
        y = data.y[:k].to(ctx.device)
        cc = torch.as_tensor(correct[:k], device=ctx.device)
        res.audit.append(audit.audit_randomness(model, x, handled=self.randomness_handled()))
        res.audit.append(audit.audit_softmax_output(model, x))
        if bool(cc.any()):
            res.audit.append(audit.audit_gradients(model, x[cc], y[cc]))
            ids = [data.ids[i] for i in range(k) if bool(cc[i])]
            res.audit.append(audit.audit_large_eps(model, x[cc], y[cc], bounds=bounds, seeds=sample_seeds(ctx.seed, f"{self.id}/audit/large_eps", ids)))  # type: ignore[arg-type]
        res.audit.append(audit.audit_clean_flags(model, x, y, torch.as_tensor(correct[:k])))
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
            rc = recheck(model, xr, xa, yr, primary, self.norm(), bounds)  # type: ignore[arg-type]
            res.audit.append(audit.audit_convergence(name="convergence", n_total=n, n_robust=len(robust_all), n_tested=len(robust_idx), broken_by_stronger=int(rc.valid.sum()), what=what))

    def extra_audit(self, ctx: RunContext, res: CheckResult, outcomes: dict[float, dict[str, Any]], n: int) -> None:
        return None


def _merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
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


def _score(ctx: RunContext, attack: Attack, x: torch.Tensor, y: torch.Tensor, eps: float, seeds: Sequence[int], *, early_stop: bool = True) -> dict[str, Any]:
    """Attack with the run's attack view, decide and verify everything on the fp32 model."""
    bounds = tuple(float(b) for b in ctx.model.bounds)
    v = verified_perturb(attack, ctx.model, x, y, eps, seeds=seeds, bounds=bounds, attack_model=ctx.fast_model, early_stop=early_stop)  # type: ignore[arg-type]
    broken = v.correct & v.check.valid
    robust = v.correct & ~v.check.valid
    return {
        "correct": v.correct.tolist(),
        "robust": robust.tolist(),
        "norm": [float(n) if b else None for n, b in zip(v.check.norms.tolist(), broken.tolist())],
        "claimed": v.claimed,
        "rejected": v.rejected,
        "flipped": v.flipped,
    }


@CHECKS.register("pgd")
class PGDCheck(_SweepCheck):
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

    def _attack(self, *, stronger: bool = False) -> Attack:
        p: PGDParams = self.params  # type: ignore[assignment]
        steps = p.steps * (2 if stronger else 1)
        return PGD(norm=self.norm(), steps=steps, rel_stepsize=p.rel_stepsize if p.rel_stepsize is not None else 2.5 / steps, abs_stepsize=p.abs_stepsize, random_start=p.random_start, restarts=p.restarts + (1 if stronger else 0), loss=p.loss)

    def attack_batch(self, ctx: RunContext, x: torch.Tensor, y: torch.Tensor, ids: Sequence[str], eps: float) -> dict[str, Any]:
        p: PGDParams = self.params  # type: ignore[assignment]
        seeds = sample_seeds(ctx.seed, f"{self.id}/{eps_key(eps)}", ids)
        return _score(ctx, self._attack(), x, y, eps, seeds, early_stop=p.early_stop)

    def stronger(self, ctx: RunContext, x: torch.Tensor, y: torch.Tensor, ids: Sequence[str], eps: float) -> tuple[torch.Tensor, str]:
        p: PGDParams = self.params  # type: ignore[assignment]
        seeds = sample_seeds(ctx.seed, f"{self.id}/audit/stronger", ids)
        return self._attack(stronger=True).perturb(ctx.model, x, y, eps, seeds=seeds), f"PGD with {2 * p.steps} steps and {p.restarts + 1} restarts"

    def definitions(self, prefix: str) -> dict[str, str]:
        return {"attack": "PGD: projected signed (Linf) or normalised (L2) gradient ascent on the loss from a uniform random start in the ball; a point counts as broken if any restart finds a valid adversarial example."}


@CHECKS.register("fgsm")
class FGSMCheck(_SweepCheck):
    """Robust accuracy under FGSM (Linf) / FGM (L2), one step of size eps, over epsilons.

    A single-step attack gives an optimistic (upper-bound) robust accuracy: the audit's
    convergence item compares with 10-step PGD.
    References: Goodfellow et al., ICLR 2015; foolbox 3.3.4 LinfFastGradientAttack.
    """

    name = "fgsm"
    description = "FGSM / FGM robust accuracy over epsilons (an optimistic bound), with a validity audit."
    Params = FGSMParams
    default_sweep = (0.25, 0.5, 1.0, 2.0)

    def attack_batch(self, ctx: RunContext, x: torch.Tensor, y: torch.Tensor, ids: Sequence[str], eps: float) -> dict[str, Any]:
        p: FGSMParams = self.params  # type: ignore[assignment]
        seeds = sample_seeds(ctx.seed, f"{self.id}/{eps_key(eps)}", ids)
        return _score(ctx, FGSM(norm=self.norm(), random_start=p.random_start), x, y, eps, seeds)

    def stronger(self, ctx: RunContext, x: torch.Tensor, y: torch.Tensor, ids: Sequence[str], eps: float) -> tuple[torch.Tensor, str]:
        seeds = sample_seeds(ctx.seed, f"{self.id}/audit/stronger", ids)
        return PGD(norm=self.norm(), steps=10, rel_stepsize=0.25).perturb(ctx.model, x, y, eps, seeds=seeds), "PGD with 10 steps"


@CHECKS.register("autoattack")
class AutoAttackCheck(_SweepCheck):
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
        return AAVersion(self.params.version) is AAVersion.RAND  # type: ignore[attr-defined]

    def attack_batch(self, ctx: RunContext, x: torch.Tensor, y: torch.Tensor, ids: Sequence[str], eps: float) -> dict[str, Any]:
        p: AutoAttackParams = self.params  # type: ignore[assignment]
        seeds = sample_seeds(ctx.seed, f"{self.id}/{eps_key(eps)}", ids)
        r = run_autoattack(ctx.model, x, y, attack_model=ctx.fast_model, eps=eps, norm=self.norm(), version=p.version, engine=p.engine, seed=ctx.seed, seeds=seeds, batch_size=max(len(ids), 1), n_iter=p.n_iter, square_queries=p.square_queries)
        nr = (r.x_adv - x).flatten(1)
        nrm = nr.abs().amax(1) if self.norm() is Norm.LINF else nr.norm(dim=1)
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
        }

    def extra_metrics(self, res: CheckResult, prefix: str, eps: float, o: dict[str, Any], n: int) -> None:
        for a, flags in o.get("after", {}).items():
            k = int(np.sum(flags))
            res.add_metric(f"{prefix}/{eps_key(eps)}/after={a}/robust_accuracy", k / n if n else math.nan, interval=wilson_interval(k, n), n=n)
        if self.params.per_sample:  # type: ignore[attr-defined]
            res.per_sample[f"fooled_by@{eps_key(eps)}"] = list(o.get("fooled_by", []))

    def curves(self, outcomes: dict[float, dict[str, Any]], eps_list: list[float], n: int) -> dict[str, list[float | None]]:
        out = super().curves(outcomes, eps_list, n)
        for a in attacks_of(AAVersion(self.params.version)):  # type: ignore[attr-defined]
            out[f"after {a}"] = [float(np.mean(outcomes[e]["after"][a])) if n and a in outcomes[e].get("after", {}) else None for e in eps_list]
        return out

    def definitions(self, prefix: str) -> dict[str, str]:
        p: AutoAttackParams = self.params  # type: ignore[assignment]
        return {
            f"{prefix}/eps=*/after=ATTACK/robust_accuracy": "robust accuracy after running the attacks up to and including ATTACK, each only on the points still robust (cumulative worst case, AutoAttack's order).",
            "attack": f"AutoAttack {p.version} ({', '.join(attacks_of(AAVersion(p.version)))}), APGD {p.n_iter} iterations, Square {p.square_queries} queries, engine {p.engine}, reference attacks seeded with the run seed.",
            "per_sample fooled_by@eps=E": "name of the attack that first broke each point ('clean' for clean errors, '' for robust points).",
        }

    def extra_audit(self, ctx: RunContext, res: CheckResult, outcomes: dict[float, dict[str, Any]], n: int) -> None:
        if AAVersion(self.params.version) is not AAVersion.STANDARD:  # type: ignore[attr-defined]
            return
        for eps, o in outcomes.items():
            after = o.get("after", {})
            if "square" in after and "fab-t" in after:
                item = audit.audit_black_box(n=n, robust_white=int(np.sum(after["fab-t"])), robust_after_black=int(np.sum(after["square"])))
                res.audit.append(type(item)(f"{item.name}@{eps_key(eps)}", item.verdict, item.message, item.evidence))

    def stronger(self, ctx: RunContext, x: torch.Tensor, y: torch.Tensor, ids: Sequence[str], eps: float) -> tuple[torch.Tensor, str]:
        p: AutoAttackParams = self.params  # type: ignore[assignment]
        seeds = sample_seeds(derive_seed(ctx.seed, "stronger"), f"{self.id}/audit", ids)
        rand = AAVersion(p.version) is AAVersion.RAND
        xa = x.clone()
        for loss in ("ce", "dlr"):
            r = APGD(norm=self.norm(), n_iter=2 * p.n_iter, loss=loss, eot_iter=20 if rand else 1).run(ctx.model, x, y, eps, seeds=seeds, bounds=tuple(float(b) for b in ctx.model.bounds))  # type: ignore[arg-type]
            xa[r.success] = r.x_adv[r.success]
        return xa, f"APGD-CE and APGD-DLR with {2 * p.n_iter} iterations and new random starts"


@dataclass(frozen=True)
class MinimalNormParams(Params):
    attack: str = "fmn"
    norm: str = "l2"
    steps: int = 100
    binary_search_steps: int = 9
    epsilons: tuple[float, ...] | None = None
    primary_eps: float | None = None
    curve_points: int = 41
    audit: bool = True
    audit_samples: int = 64
    per_sample: bool = True

    def validate(self) -> None:
        a = _enum(MinNormAttack, self.attack, "minimal_norm.attack")
        n = _enum(Norm, self.norm, "minimal_norm.norm")
        if a is MinNormAttack.CW_L2 and n is not Norm.L2:
            raise SuiteError("minimal_norm: cw_l2 is an L2 attack; set norm: l2 or use attack: fmn / deepfool for Linf.")
        if self.steps < 1 or self.binary_search_steps < 1 or self.curve_points < 2:
            raise SuiteError("minimal_norm: steps and binary_search_steps must be >= 1 and curve_points >= 2.")


@CHECKS.register("minimal_norm")
class MinimalNormCheck(Check):
    """Minimal adversarial perturbations (FMN, CW-L2 or DeepFool via foolbox): median minimal norm
    and the whole robust-accuracy-versus-epsilon curve from one run (robust at eps: correct and
    minimal norm > eps).

    Shapes: data (N, C, H, W) in model bounds -> per-sample minimal norms (N,).
    References: Pintor et al. NeurIPS 2021 (FMN); Carlini & Wagner S&P 2017; Moosavi-Dezfooli et
    al. CVPR 2016; foolbox 3.3.4.
    """

    name = "minimal_norm"
    family = "adversarial"
    description = "Minimal-norm attack (fmn / cw_l2 / deepfool): median minimal perturbation and the robust-accuracy-vs-epsilon curve."
    Params = MinimalNormParams

    def run(self, ctx: RunContext) -> CheckResult:
        p: MinimalNormParams = self.params  # type: ignore[assignment]
        norm = Norm.parse(p.norm)
        model, data = ctx.model, ctx.data
        eps_list, primary = resolve_epsilons(model, norm, p.epsilons, p.primary_eps)
        res = self.new_result()
        prefix = f"adversarial/{self.id}"
        scope = ctx.store.scope(self.id, {"check": self.name, **res.params})
        n, bs = len(data), ctx.batch_size

        def batch(start: int, stop: int) -> dict[str, Any]:
            x = data.images(slice(start, stop)).to(ctx.device)
            yb = data.y[start:stop].to(ctx.device)
            _, mn = minimal_perturbation(model, x, yb, attack=p.attack, norm=norm, steps=p.steps, binary_search_steps=p.binary_search_steps, bounds=tuple(float(b) for b in model.bounds))  # type: ignore[arg-type]
            return {"min_norm": [None if not math.isfinite(v) else float(v) for v in mn.tolist()]}

        mins: list[float] = []
        for part in ctx.map_batches(scope, n, batch, batch_size=bs, desc=self.id):
            mins.extend(math.inf if v is None else v for v in part["min_norm"])
        mn_arr = np.asarray(mins, dtype=float)
        correct = mn_arr > 0
        y_all = data.y.numpy()
        res.add_metric(f"{prefix}/clean_accuracy", float(correct.mean()) if n else math.nan, interval=wilson_interval(int(correct.sum()), n), n=n)
        res.add_metric(f"{prefix}/median_min_norm", float(np.median(mn_arr)) if n else math.nan, n=n)
        if correct.any():
            res.add_metric(f"{prefix}/median_min_norm_given_clean_correct", float(np.median(mn_arr[correct])), n=int(correct.sum()))
            found = correct & np.isfinite(mn_arr)
            res.add_metric(f"{prefix}/attack_success_rate", float(found.sum() / correct.sum()), interval=wilson_interval(int(found.sum()), int(correct.sum())), n=int(correct.sum()))
        ra: dict[float, float] = {}
        for eps in eps_list:
            robust = mn_arr > eps
            ra[eps] = float(robust.mean()) if n else math.nan
            add_robustness_metrics(res, f"{prefix}/{eps_key(eps)}", robust=robust, correct=correct, y=y_all, class_names=model.class_names)
            if p.per_sample:
                res.per_sample[f"robust@{eps_key(eps)}"] = robust.tolist()
        prim = mn_arr > primary
        res.add_metric(f"{prefix}/robust_accuracy", float(prim.mean()) if n else math.nan, interval=wilson_interval(int(prim.sum()), n), n=n)
        res.add_metric(f"{prefix}/primary_eps", primary)
        finite = mn_arr[np.isfinite(mn_arr)]
        top = max(2 * max(eps_list), float(finite.max()) if finite.size else 0.0)
        grid = [top * i / (p.curve_points - 1) for i in range(p.curve_points)]
        res.series["robust_accuracy_vs_eps"] = Series(x=grid, y={p.attack: [float((mn_arr > e).mean()) if n else None for e in grid]}, x_label=f"epsilon ({norm.value})", y_label="robust accuracy", kind="line")
        if p.per_sample:
            res.per_sample["min_norm"] = [None if not math.isfinite(v) else float(v) for v in mn_arr]
        res.definitions.update(standard_definitions(prefix, norm))
        res.definitions.update({
            f"{prefix}/median_min_norm": f"median over all n points of the smallest {norm.value} perturbation found by {p.attack} (re-checked misclassified, in bounds); clean errors count 0, points the attack could not break count +inf.",
            f"{prefix}/median_min_norm_given_clean_correct": "the same median over the clean-correct points only.",
            f"{prefix}/eps=*/robust_accuracy": "fraction of all n points that are correct and whose minimal perturbation exceeds eps (an upper bound on the true robust accuracy: the attack may miss smaller perturbations).",
            "per_sample min_norm": "minimal perturbation norm per point (0 for clean errors, null when none was found).",
        })
        if p.audit:
            k = min(n, p.audit_samples)
            x = data.images(slice(0, k)).to(ctx.device)
            yk = data.y[:k].to(ctx.device)
            cc = torch.as_tensor(correct[:k], device=ctx.device)
            res.audit.append(audit.audit_randomness(model, x, handled=False))
            res.audit.append(audit.audit_softmax_output(model, x))
            if bool(cc.any()):
                res.audit.append(audit.audit_gradients(model, x[cc], yk[cc]))
                ids = [data.ids[i] for i in range(k) if bool(cc[i])]
                res.audit.append(audit.audit_large_eps(model, x[cc], yk[cc], bounds=tuple(float(b) for b in model.bounds), seeds=sample_seeds(ctx.seed, f"{self.id}/audit/large_eps", ids)))  # type: ignore[arg-type]
        verdict = audit.overall_verdict(res.audit)
        res.add_metric(f"{prefix}/audit/verdict", audit.verdict_code(verdict))
        res.notes.append(f"validity audit verdict: {verdict.value}")
        return res
