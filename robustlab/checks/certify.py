"""The ``certify`` check: certified L2 robustness by randomized smoothing, next to an attack.

For each noise level sigma, CERTIFY (Cohen et al. 2019) runs on an evenly spaced sample of the test
points and gives the lower end of a robustness interval; SmoothAdv (Salman et al. 2019), an L2 PGD
attack on the smoothed classifier with Monte-Carlo gradients, gives the upper end.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..attacks.base import Norm
from ..attacks.pgd import PGD
from ..smoothing.bounds import ALPHA_MIN, max_certifiable_radius, min_certify_samples_fixed, min_predict_samples
from ..smoothing.curves import average_certified_radius, certified_accuracy, certified_count, radius_grid, standard_sigmas
from ..smoothing.smoothadv import smoothadv_pgd_l2
from ..smoothing.sequential import DEFINITION as ADAPTIVE_DEFINITION
from ..smoothing.sequential import SETTLE_WRONG_DEFINITION, SamplingMode, min_certify_samples
from ..smoothing.classifier import ABSTAIN, Certificate, SmoothedClassifier
from ..errors import SuiteError
from ..metric_keys import at_radius, child, sigma_segment
from ..stats import wilson_interval
from ..scorecard import AuditItem, CheckResult, Series, Verdict
from ..seeding import sample_seeds
from .base import CHECKS, Check, Params, RunContext, refuse_key_clash

log = logging.getLogger(__name__)

DEFINITIONS: dict[str, str] = {
    "certified_accuracy": (
        "Certified accuracy at radius r (Cohen et al. 2019): fraction of ALL evaluated points for which CERTIFY "
        "does not abstain, returns the true label, and certifies an L2 radius R >= r. Each certificate holds with "
        "probability >= 1 - alpha over the Monte-Carlo noise. R = sigma * Phi^-1(pA_lower), pA_lower the one-sided "
        "(1 - alpha) Clopper-Pearson lower bound from n estimation samples, the class chosen with n0 separate samples; "
        "abstain when pA_lower < 0.5. The 95% interval is Wilson's, over the sampled test points."
    ),
    "mean_samples": (
        "Mean number of noise samples (forward passes) CERTIFY spent per evaluated point: n0 selection samples plus the estimation "
        "samples (exactly n with fixed sampling; with adaptive sampling the number used before the answer was decided, at most n)."
    ),
    "average_certified_radius": "Average certified radius (Zhai et al. 2020): mean over all evaluated points of R for correct certified points, 0 otherwise.",
    "abstention_rate": "Fraction of evaluated points where CERTIFY abstains (pA_lower < 0.5).",
    "smoothed_accuracy": (
        "Clean accuracy of the smoothed classifier by PREDICT (Cohen et al. 2019): majority class of n noisy votes, abstaining "
        "when a two-sided binomial test of the top two counts has p-value > alpha; abstentions count as errors."
    ),
    "base_accuracy": "Top-1 accuracy of the base classifier, without noise, on the same evaluated points.",
    "interval": (
        "Robustness interval of the smoothed classifier g at L2 radius r. lower = certified accuracy at r. upper = empirical "
        "robust accuracy: fraction of all evaluated points where the Monte-Carlo majority vote of g (no abstention) is correct "
        "at x and still correct at the point found by SmoothAdv-PGD (Salman et al. 2019: L2 PGD on the soft smoothed classifier, "
        "m fresh noise samples per step, step 2r/steps, inside model.bounds) and, with base_attack, at the point found by L2 PGD "
        "on the base classifier (random start, step 2.5r/steps, last iterate): the pointwise worst case of the attacks; g's "
        "prediction at an attack point is estimated from attack_n noise samples (upper_smoothadv / upper_base_pgd: each attack alone). gap = upper - lower: how much of the robustness is neither proven nor refuted. upper is an estimate (attacks "
        "only show what they found; Monte-Carlo votes are noisy), lower holds with probability >= 1 - alpha per point."
    ),
    "noise": (
        "sigma and every radius are in units of the input range, like pixel values in [0, 1] (the convention of Cohen et al. and "
        "of adversarial epsilons): for a model with bounds (lo, hi) the noise std is sigma * (hi - lo) and radii are divided by "
        "(hi - lo), so the same model gives the same certified curve whatever its input scale. "
        "Gaussian noise N(0, sigma^2 I) is added in the model's input space (model.bounds, before the model's own normalisation); "
        "noisy inputs are not clamped, as in Cohen et al. Noise is seeded per sample (run seed, check id, sigma, sample id) and "
        "drawn in blocks independent of the batch size."
    ),
}


@dataclass(frozen=True)
class CertifyParams(Params):
    """Budgets of the ``certify`` check.

    Attributes:
        sigmas: noise levels (input units); empty: the data set's standard levels (``STANDARD_SIGMAS``).
        n0: selection samples. n: estimation samples (the cap with adaptive sampling). alpha: failure
            probability per certificate.
        sampling: ``fixed`` (Cohen et al.: exactly n samples, Clopper-Pearson) or ``adaptive``
            (anytime-valid confidence sequence, stops once every radius in ``radii`` is decided;
            ``robustlab.smoothing.sequential``).
        settle_wrong: with adaptive sampling, a point whose selected class is not its label (uncertified
            at every radius whatever its bound) stops once its abstention is decided; its class,
            abstention and majority are unchanged, its per-sample radius and sample count shrink.
            False: the label-blind rule for every point (per-sample radii of wrong points as tight as
            the cap allows).
        predict_n: samples for PREDICT (smoothed accuracy); 0 = ``n``.
        num_points: evenly spaced test points to certify; 0 = all.
        radii: radii at which certified accuracy is reported as a metric.
        attack: run SmoothAdv for the robustness interval. interval_radii: its radii.
        attack_steps, attack_samples: PGD steps and noise samples per step. attack_n: noise samples
            to estimate g at the attack point. base_attack: also try L2 PGD on the base classifier
            (``robustlab.attacks.pgd.PGD``) and keep the pointwise worst case of the two attacks.
        batch_size: noisy inputs per forward pass; 0 = the run's batch size on a CPU (large batches fall out of its caches), at least 1000 on a GPU.
        collapse_ratio: warn when certified accuracy at r=0 falls below this fraction of the base
            model's clean accuracy.
    """

    sigmas: list[float] = field(default_factory=list)
    n0: int = 100
    n: int = 100_000
    alpha: float = 0.001
    sampling: str = SamplingMode.FIXED.value
    settle_wrong: bool = True
    predict_n: int = 0
    num_points: int = 500
    radii: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0])
    attack: bool = True
    interval_radii: list[float] = field(default_factory=lambda: [0.25, 0.5, 1.0])
    attack_steps: int = 20
    attack_samples: int = 32
    attack_n: int = 1000
    base_attack: bool = True
    batch_size: int = 0
    collapse_ratio: float = 0.5

    def validate(self) -> None:
        if any(not (s > 0 and math.isfinite(s)) for s in self.sigmas):
            raise SuiteError(f"certify.sigmas must be positive numbers, got {self.sigmas}.")
        if self.n0 < 1:
            raise SuiteError(f"certify.n0 must be at least 1, got {self.n0}; Cohen et al. use 100.")
        if not ALPHA_MIN <= self.alpha < 1:
            raise SuiteError(f"certify.alpha must be in [{ALPHA_MIN:g}, 1), got {self.alpha}; the standard is 0.001.")
        if self.sampling not in {m.value for m in SamplingMode}:
            raise SuiteError(f"certify.sampling must be one of {', '.join(m.value for m in SamplingMode)}, got {self.sampling!r}.")
        adaptive = SamplingMode(self.sampling) is SamplingMode.ADAPTIVE  # the confidence sequence holds at every t at once: it needs more
        need = min_certify_samples(self.alpha) if adaptive else min_certify_samples_fixed(self.alpha)
        if self.n < need:
            raise SuiteError(f"certify.n={self.n} cannot certify any point at alpha={self.alpha} with {self.sampling} sampling; use n >= {need} "
                             "(the standard is 100000).")
        if self.predict_n < 0 or self.num_points < 0 or self.batch_size < 0:
            raise SuiteError("certify.predict_n, num_points and batch_size must be >= 0 (0 = default).")
        need = min_predict_samples(self.alpha)
        if (self.predict_n or self.n) < need:
            raise SuiteError(f"certify.predict_n={self.predict_n or self.n}{' (n, as predict_n is 0)' if not self.predict_n else ''} leaves PREDICT no answer at "
                             f"alpha={self.alpha} (all votes for one class give the p-value 2 * 0.5^n); use predict_n >= {need}.")
        if any(not (r >= 0 and math.isfinite(r)) for r in [*self.radii, *self.interval_radii]):
            raise SuiteError("certify.radii and certify.interval_radii must be non-negative numbers.")
        refuse_key_clash("certify.sigmas", self.sigmas, sigma_segment)
        refuse_key_clash("certify.radii", self.radii, lambda r: at_radius("certified_accuracy", r))
        refuse_key_clash("certify.interval_radii", self.interval_radii, lambda r: at_radius("interval", r))
        if self.attack and (self.attack_steps < 1 or self.attack_samples < 1 or self.attack_n < 1):
            raise SuiteError("certify.attack_steps, attack_samples and attack_n must be at least 1 (or set attack: false).")
        if not 0 <= self.collapse_ratio <= 1:
            raise SuiteError(f"certify.collapse_ratio must be in [0, 1], got {self.collapse_ratio}.")


def fmt(v: float) -> str:
    """Stable number formatting in metric keys: ``0.25``, ``0.12``, ``1``."""
    return f"{float(v):.4g}"


def sample_indices(total: int, num_points: int) -> list[int]:
    """``num_points`` evenly spaced indices of ``0..total-1`` (all when 0 or >= total)."""
    if num_points <= 0 or num_points >= total:
        return list(range(total))
    return [(i * total) // num_points for i in range(num_points)]


@CHECKS.register("certify")
class CertifyCheck(Check[CertifyParams]):
    """Certified L2 robustness by randomized smoothing, with an attack-based upper bound.

    Per sigma: CERTIFY on the sampled points (certified accuracy vs radius, average certified
    radius, abstention rate, per-sample radii), PREDICT (smoothed clean accuracy) and, per
    interval radius, SmoothAdv-PGD on the smoothed classifier (empirical robust accuracy).

    Shapes: images (N, C, H, W) in ``model.bounds``; noise (n, C, H, W) per image, on the device.
    References: Cohen, Rosenfeld & Kolter, ICML 2019 (checked against locuslab/smoothing
    ``core.py``, tests/test_certify.py); Salman et al., NeurIPS 2019 (SmoothAdv); Zhai et al.,
    ICLR 2020 (average certified radius).
    """

    name = "certify"
    family = "certify"
    description = "Randomized smoothing: certified accuracy vs L2 radius, ACR, abstention, PREDICT accuracy, robustness interval."
    Params = CertifyParams

    def _noise_batch(self, ctx: RunContext) -> int:
        """Noisy inputs per forward pass: the check's ``batch_size``, else at least 1000 on a GPU and the
        run's ``--batch-size`` on a CPU, where large batches fall out of the caches (a CIFAR ResNet-18:
        3.9 ms per noisy image at 128, 4.8 at 1000, batch norms folded). Votes do not depend on it
        beyond float rounding: the noise is drawn per image in fixed blocks."""
        p: CertifyParams = self.params
        if p.batch_size:
            return int(p.batch_size)
        return max(ctx.batch_size, 1) if ctx.device.type == "cpu" else max(ctx.batch_size, 1000)

    def prefix(self) -> str:
        return "certify" if self.id == self.name else f"certify/{self.id}"

    def run(self, ctx: RunContext) -> CheckResult:
        p: CertifyParams = self.params
        res = self.new_result()
        model, data = ctx.model, ctx.data
        pre = self.prefix()
        sigmas = list(p.sigmas) or list(standard_sigmas(ctx.data_spec or data.spec))
        res.params["sigmas_used"] = sigmas
        idx = sample_indices(len(data), p.num_points)
        ids = [data.ids[i] for i in idx]
        x_all = data.images(idx)
        y_all = data.y[idx]
        y = y_all.numpy()
        npts = len(idx)
        batch = self._noise_batch(ctx)
        scale = float(model.bounds[1]) - float(model.bounds[0])  # sigmas and radii are in [0, 1] units, like epsilons
        scope = ctx.store.scope(self.id, {"check": self.name, **{k: v for k, v in res.params.items() if k != "sigmas_used"}})

        with torch.no_grad():
            base_pred = model.predict_logits(x_all, batch_size=ctx.batch_size).argmax(1).numpy()
        base_acc = float((base_pred == y).mean()) if npts else math.nan
        res.add_metric(child(pre, "base_accuracy"), base_acc, interval=wilson_interval(int((base_pred == y).sum()), npts), n=npts)
        res.definitions[child(pre, "base_accuracy")] = DEFINITIONS["base_accuracy"]
        res.definitions[child(pre, "noise")] = DEFINITIONS["noise"]

        curve_max = max([max_certifiable_radius(p.n, p.alpha, s) for s in sigmas] + [max(p.radii, default=0.0)])
        grid = radius_grid(curve_max)
        curves: dict[str, list[float | None]] = {}
        for sigma in sigmas:
            s_key = child(pre, sigma_segment(sigma))
            smooth = SmoothedClassifier(model, sigma=sigma * scale, batch_size=batch, fold_bn=bool(ctx.options.get("fold_bn", True)))
            seeds = sample_seeds(ctx.seed, f"{self.id}/sigma={fmt(sigma)}", ids)
            certs = self._certify(ctx, smooth, x_all, y, seeds, ids, scope, s_key, p, scale)
            pred = np.array([c.prediction for c in certs], dtype=np.int64)
            radius = np.array([c.radius for c in certs], dtype=np.float64) / scale
            correct = (pred == y) & (pred != ABSTAIN)
            adaptive = SamplingMode(p.sampling) is SamplingMode.ADAPTIVE
            for r in p.radii:
                k = certified_count(radius, correct, r)
                res.add_metric(child(s_key, at_radius("certified_accuracy", r)), certified_accuracy(radius, correct, r), interval=wilson_interval(k, npts), n=npts)
                res.definitions[child(s_key, at_radius("certified_accuracy", r))] = DEFINITIONS["certified_accuracy"] + (
                    " " + ADAPTIVE_DEFINITION + (" " + SETTLE_WRONG_DEFINITION if p.settle_wrong else "") if adaptive else "")
            res.add_metric(child(s_key, "mean_samples"), float(p.n0 + np.mean([c.n for c in certs])) if npts else math.nan, n=npts)
            res.definitions[child(s_key, "mean_samples")] = DEFINITIONS["mean_samples"]
            res.add_metric(child(s_key, "average_certified_radius"), average_certified_radius(radius, correct), n=npts)
            res.definitions[child(s_key, "average_certified_radius")] = DEFINITIONS["average_certified_radius"]
            n_abs = int((pred == ABSTAIN).sum())
            res.add_metric(child(s_key, "abstention_rate"), n_abs / npts if npts else math.nan, interval=wilson_interval(n_abs, npts), n=npts)
            res.definitions[child(s_key, "abstention_rate")] = DEFINITIONS["abstention_rate"]
            curves[f"sigma={fmt(sigma)}"] = [certified_accuracy(radius, correct, r) for r in grid]

            # PREDICT: the smoothed classifier's clean accuracy
            n_pred = p.predict_n or p.n
            ppred = self._predict(ctx, smooth, x_all, seeds, ids, scope, s_key, n_pred, p.alpha)
            k_ok = int(((ppred == y) & (ppred != ABSTAIN)).sum())
            res.add_metric(child(s_key, "smoothed_accuracy"), k_ok / npts if npts else math.nan, interval=wilson_interval(k_ok, npts), n=npts)
            res.add_metric(child(s_key, "smoothed_abstention_rate"), float((ppred == ABSTAIN).mean()) if npts else math.nan, n=npts)
            res.definitions[child(s_key, "smoothed_accuracy")] = DEFINITIONS["smoothed_accuracy"]

            self._per_sample(res, len(data), idx, s_key, certs, ppred, scale)
            self._honesty(res, s_key, sigma, base_acc, correct, p)
            if p.attack and p.interval_radii:
                self._interval(ctx, res, smooth, x_all, y_all, seeds, certs, correct, radius, scope, s_key, sigma * scale, p, scale)

        res.series[child(pre, "certified_accuracy")] = Series(x=grid, y=curves, x_label="L2 radius", y_label="certified accuracy", kind="line")
        res.notes.append(
            f"Randomized smoothing on {npts} of {len(data)} test points (evenly spaced), n0={p.n0}, n={p.n}"
            f"{' (cap; adaptive sampling by an anytime-valid confidence sequence: radii are those certified when sampling stopped, so the average certified radius is not comparable with fixed n)' if p.sampling == SamplingMode.ADAPTIVE.value else ''}, alpha={p.alpha}, "
            f"sigmas {', '.join(fmt(s) for s in sigmas)}{' (the standard levels for this data set)' if not p.sigmas else ''}. "
            "Certificates are for the Gaussian-smoothed classifier, not for the base model."
        )
        return res

    # -- pieces ------------------------------------------------------------------------------
    def _certify(self, ctx: RunContext, smooth: SmoothedClassifier, x: torch.Tensor, y: np.ndarray, seeds: list[int], ids: list[str],
                 scope: str, s_key: str, p: CertifyParams, scale: float) -> list[Certificate]:
        """CERTIFY every point, reusing stored results (resume); one store entry per chunk of points.
        ``scale`` is the width of the model's input range: the radii that stop adaptive sampling are
        in [0, 1] units, the smoothed classifier works in the model's units."""
        adaptive = SamplingMode(p.sampling) is SamplingMode.ADAPTIVE
        # the interval's lower ends are certified accuracies at its radii: sampling must decide those too
        stop_radii = sorted({*p.radii, *(p.interval_radii if p.attack else [])})
        chunk = 64 if adaptive else max(8, min(64, (self._noise_batch(ctx)) // (p.n0 + p.n)))

        def batch(start: int, stop: int) -> list[list[float]]:
            if adaptive:
                certs = smooth.certify_adaptive(x[start:stop], seeds[start:stop], radii=[r * scale for r in stop_radii], n0=p.n0, n=p.n, alpha=p.alpha,
                                                labels=y[start:stop] if p.settle_wrong else None)
            else:
                certs = smooth.certify(x[start:stop], seeds[start:stop], n0=p.n0, n=p.n, alpha=p.alpha)
            return [[c.prediction, c.radius, c.p_lower, c.count, c.n, c.majority, c.selected] for c in certs]

        parts = ctx.map_batches(f"{scope}|{s_key}/certify", len(ids), batch, batch_size=chunk, desc=f"certify {s_key.split('/')[-1]}")
        return [Certificate(prediction=int(a), radius=float(b), p_lower=float(c), count=int(d), n=int(e), majority=int(f), selected=int(g))
                for part in parts for a, b, c, d, e, f, g in part]

    def _predict(self, ctx: RunContext, smooth: SmoothedClassifier, x: torch.Tensor, seeds: list[int], ids: list[str],
                 scope: str, s_key: str, n: int, alpha: float) -> np.ndarray:
        """PREDICT every point (stored per chunk for resume); returns (N,) classes, -1 = abstain."""
        chunk = max(8, min(64, self._noise_batch(ctx) // n))

        def batch(start: int, stop: int) -> list[int]:
            return [q.prediction for q in smooth.predict(x[start:stop], seeds[start:stop], n=n, alpha=alpha)]

        parts = ctx.map_batches(f"{scope}|{s_key}/predict/n={n}", len(ids), batch, batch_size=chunk, desc=f"predict {s_key.split('/')[-1]}")
        return np.array([int(c) for part in parts for c in part], dtype=np.int64)

    def _per_sample(self, res: CheckResult, total: int, idx: list[int], s_key: str, certs: list[Certificate], ppred: np.ndarray, scale: float) -> None:
        radius: list[Any] = [None] * total
        pred: list[Any] = [None] * total
        predict: list[Any] = [None] * total
        for j, i in enumerate(idx):
            radius[i] = certs[j].radius / scale
            pred[i] = certs[j].prediction
            predict[i] = int(ppred[j])
        res.per_sample[child(s_key, "radius")] = radius
        res.per_sample[child(s_key, "certified_prediction")] = pred
        res.per_sample[child(s_key, "predict")] = predict
        res.definitions[child(s_key, "radius")] = "Per-sample certified L2 radius (0 when CERTIFY abstains; None for points not sampled); predictions use -1 for abstain."

    def _honesty(self, res: CheckResult, s_key: str, sigma: float, base_acc: float, correct: np.ndarray, p: CertifyParams) -> None:
        cert0 = float(correct.mean()) if correct.size else math.nan
        if not (base_acc > 0 and cert0 < p.collapse_ratio * base_acc):
            return
        msg = (
            f"At sigma={fmt(sigma)} the certified accuracy collapses ({cert0:.1%} at r=0 against {base_acc:.1%} clean accuracy of the base "
            "model): the base model was most likely not trained with Gaussian noise of this level, and randomized smoothing certifies "
            f"little for such models. Train it with Gaussian noise augmentation at sigma={fmt(sigma)} (the defense module's Gaussian "
            "training, `robustlab defend`) and certify the resulting model."
        )
        res.notes.append(msg)
        res.audit.append(AuditItem(name=child(s_key, "noise_trained_base_model"), verdict=Verdict.SUSPECT, message=msg,
                                   evidence={"certified_accuracy_r0": cert0, "base_accuracy": base_acc, "collapse_ratio": p.collapse_ratio}))

    def _interval(self, ctx: RunContext, res: CheckResult, smooth: SmoothedClassifier, x: torch.Tensor, y: torch.Tensor, seeds: list[int],
                  certs: list[Certificate], correct: np.ndarray, radius: np.ndarray, scope: str, s_key: str, sigma: float, p: CertifyParams,
                  scale: float) -> None:
        """Certified (lower) and attacked (upper: SmoothAdv, and base-model PGD if enabled) robust accuracy per radius.

        ``sigma`` is in the model's input units; ``radius`` and ``p.interval_radii`` in [0, 1] units (times ``scale``).
        The attacks run per chunk of points through ``map_batches``: stored for ``--resume`` and dealt to the
        ranks under torchrun (every point's noise comes from its own seed, so chunks do not change results)."""
        model = ctx.model
        yn = y.numpy()
        clean_ok = np.array([c.majority for c in certs], dtype=np.int64) == yn
        lowers: list[float | None] = []
        uppers: list[float | None] = []
        violations: dict[str, int] = {}
        npts = len(yn)
        batch = self._noise_batch(ctx)
        for r in p.interval_radii:
            robust_sa = clean_ok.copy()
            robust_b = clean_ok.copy()
            todo = np.nonzero(clean_ok)[0].tolist()
            if todo and r > 0:

                def attack(start: int, stop: int, r: float = r, todo: list[int] = todo) -> dict[str, list[bool]]:
                    sel = todo[start:stop]
                    att_seeds = [seeds[i] for i in sel]
                    xa = smoothadv_pgd_l2(model, x[sel], y[sel], att_seeds, eps=r * scale, sigma=sigma, bounds=model.bounds,
                                          steps=p.attack_steps, samples=p.attack_samples, batch_size=batch)
                    maj = smooth.majority(xa, att_seeds, n=p.attack_n, phase=f"attack/r={fmt(r)}")
                    out = {"smoothadv": (maj == yn[sel]).tolist()}
                    if p.base_attack:
                        pgd = PGD(norm=Norm.L2, steps=p.attack_steps, rel_stepsize=2.5 / p.attack_steps, random_start=True)
                        xb = pgd.perturb(model, x[sel].to(ctx.device), y[sel].to(ctx.device), float(r) * scale, seeds=att_seeds, early_stop=False, bounds=model.bounds)
                        maj_b = smooth.majority(xb, att_seeds, n=p.attack_n, phase=f"base_pgd/r={fmt(r)}")
                        out["base_pgd"] = (maj_b == yn[sel]).tolist()
                    return out

                chunk = max(1, min(64, batch // max(1, p.attack_samples)))
                parts = ctx.map_batches(f"{scope}|{s_key}/interval/r={fmt(r)}", len(todo), attack, batch_size=chunk, desc=f"interval {s_key.split('/')[-1]} r={fmt(r)}")
                robust_sa[todo] = [v for part in parts for v in part["smoothadv"]]
                if p.base_attack:
                    robust_b[todo] = [v for part in parts for v in part["base_pgd"]]
            robust = robust_sa & robust_b
            lower = certified_accuracy(radius, correct, r)
            upper = float(robust.mean()) if npts else math.nan
            rk = child(s_key, at_radius("interval", r))
            res.add_metric(child(rk, "lower"), lower, n=npts)
            res.add_metric(child(rk, "upper"), upper, interval=wilson_interval(int(robust.sum()), npts), n=npts)
            res.add_metric(child(rk, "gap"), upper - lower, n=npts)
            res.add_metric(child(rk, "upper_smoothadv"), float(robust_sa.mean()) if npts else math.nan, n=npts)
            if p.base_attack:
                res.add_metric(child(rk, "upper_base_pgd"), float(robust_b.mean()) if npts else math.nan, n=npts)
            res.definitions[rk] = DEFINITIONS["interval"]
            lowers.append(lower)
            uppers.append(upper)
            violations[fmt(r)] = int((correct & (radius >= r) & ~robust).sum())
        res.series[child(s_key, "interval")] = Series(x=list(p.interval_radii), y={"certified (lower)": lowers, "attacks (upper)": uppers},
                                                 x_label="L2 radius", y_label="accuracy", kind="line")
        bad = sum(violations.values())
        res.audit.append(AuditItem(
            name=child(s_key, "interval_consistency"),
            verdict=Verdict.VALID if bad == 0 else Verdict.SUSPECT,
            message=("every point certified at radius r also resisted the attack at r" if bad == 0 else
                     f"{bad} (point, radius) pairs were certified yet the attack changed the Monte-Carlo majority vote: expected only with "
                     f"probability about alpha={p.alpha} per point or when pA at the attack point is near 1/2 (noisy votes); if frequent, "
                     "the certificate or the model's determinism is in doubt."),
            evidence={"violations_by_radius": violations, "attack": "SmoothAdv-PGD on the smoothed classifier (Monte-Carlo gradients)" + (" and L2 PGD on the base classifier" if p.base_attack else ""),
                      "attack_steps": p.attack_steps, "attack_samples": p.attack_samples, "attack_n": p.attack_n},
        ))
