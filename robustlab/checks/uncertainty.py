"""The ``uncertainty`` check: does the model know when it is wrong, on clean, corrupted, shifted,
adversarial and OOD data?

Failure detection (AUROC / AUPR-error / FPR@95TPR of each confidence score at separating correct
from wrong predictions), selective prediction (risk-coverage, AURC, E-AURC, selective risk at fixed
coverages and coverage at target risks, thresholds fitted on validation data), calibration (ECE,
adaptive and classwise ECE, NLL, Brier, before and after temperature scaling fitted on validation
data) and split conformal prediction sets (LAC, APS, RAPS) with coverage and set size. Algorithms
live in :mod:`robustlab.uncertainty`; this file gathers logits and builds keys.

Key scheme (``P`` = ``uncertainty``, or ``uncertainty/<entry id>``): ``P/<family>/<method...>/<condition...>/<metric>``

* family/method: ``model``; ``failure/<score>``; ``selective/<score>`` and
  ``selective/<score>/coverage_<c>`` | ``risk_<r>``; ``calibration/raw`` | ``calibration/ts``;
  ``conformal/<method>/<level>``.
* condition: nothing (clean test data); ``s<k>/<corruption>``; ``s<k>`` (all corruptions of
  severity k pooled); ``corruption`` (all pooled); ``shift/<set>``; ``adversarial/pgd/eps_<e>``;
  ``ood/<set>`` (OOD: ``conformal/.../nonempty_rate``, a miss, and ``selective/.../acceptance``).

Example: ``uncertainty/conformal/aps/0.9/s3/gaussian_noise/coverage``; the gate-able
``uncertainty/conformal/aps/0.9/corruption/coverage`` carries a Wilson interval.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from ..errors import RobustlabError, SuiteError
from ..metric_keys import key, legal_segment, severity_segment
from ..scorecard import CheckResult, Interval, Series
from .base import CHECKS, Check, Params, RunContext
from .uncertainty_adversarial import measure_adversarial

if TYPE_CHECKING:
    import numpy as np
    import torch

    from ..data.base import Dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UncertaintyParams(Params):
    """Parameters of the ``uncertainty`` check. ``shift``/``ood`` ``None``: the data domain's
    default sets (``robustlab.ood.defaults``); ``[]`` disables. ``adv_eps`` is a fraction of the
    width of the model's bounds (L-inf PGD); ``adv_limit: 0`` disables the adversarial condition."""

    scores: list[str] = field(default_factory=lambda: ["msp", "max_logit", "energy", "doctor", "entropy"])
    detectors: list[str] = field(default_factory=list)
    primary_score: str = "msp"
    coverages: list[float] = field(default_factory=lambda: [0.8, 0.9, 0.95])
    target_risks: list[float] = field(default_factory=lambda: [0.01, 0.05])
    methods: list[str] = field(default_factory=lambda: ["lac", "aps", "raps"])
    levels: list[float] = field(default_factory=lambda: [0.9, 0.95])
    randomized: bool = True
    raps_lam: float = 0.01
    raps_k_reg: int = 1
    ece_bins: int = 15
    n_boot: int = 200
    val_limit: int | None = 2000
    corruptions: list[str] = field(default_factory=lambda: ["gaussian_noise", "defocus_blur", "contrast", "jpeg_compression"])
    severities: list[int] = field(default_factory=lambda: [1, 3, 5])
    shift: list[str] | None = None
    ood: list[str] | None = None
    ood_limit: int | None = 200
    synthetic_n: int = 100
    adv_eps: float = 0.03137
    adv_steps: int = 10
    adv_limit: int = 200
    per_sample: bool = True

    def validate(self) -> None:
        from ..corruptions.engine import check_name
        from .ood_params import refuse_unknown_sources
        from ..ood.base import DETECTORS
        from ..uncertainty import CONFIDENCE_SCORES, CONFORMAL_METHODS

        for s in (*self.scores, self.primary_score):
            if s not in CONFIDENCE_SCORES:
                raise SuiteError(f"uncertainty: {CONFIDENCE_SCORES.unknown_message(s)}")
        if self.primary_score not in self.scores:
            raise SuiteError(f"uncertainty: primary_score {self.primary_score!r} must be one of scores {self.scores}.")
        for d in self.detectors:
            if d not in DETECTORS:
                raise SuiteError(f"uncertainty: {DETECTORS.unknown_message(d)}")
        for m in self.methods:
            if m not in CONFORMAL_METHODS:
                raise SuiteError(f"uncertainty: {CONFORMAL_METHODS.unknown_message(m)}")
        for name, vals in (("coverages", self.coverages), ("levels", self.levels), ("target_risks", self.target_risks)):
            if any(not 0 < v < 1 for v in vals) or len(set(vals)) != len(vals):
                raise SuiteError(f"uncertainty: {name} must be distinct numbers in (0, 1), e.g. [0.9, 0.95]; got {vals}.")
        for c in self.corruptions:
            try:
                check_name(c)
            except RobustlabError as exc:
                raise SuiteError(f"uncertainty: {exc}") from exc
        if any(s not in (1, 2, 3, 4, 5) for s in self.severities):
            raise SuiteError(f"uncertainty: severities must be in 1..5, got {self.severities}.")
        if self.n_boot < 0 or self.ece_bins < 2 or self.raps_lam < 0 or self.raps_k_reg < 0 or self.adv_steps < 1 or self.adv_limit < 0 or self.synthetic_n < 1:
            raise SuiteError("uncertainty: n_boot >= 0, ece_bins >= 2, raps_lam >= 0, raps_k_reg >= 0, adv_steps >= 1, adv_limit >= 0 and synthetic_n >= 1 are required.")
        if not 0 <= self.adv_eps <= 1:
            raise SuiteError(f"uncertainty: adv_eps is a fraction of the bounds' width in [0, 1], got {self.adv_eps}.")
        refuse_unknown_sources("uncertainty", [*(self.shift or []), *(self.ood or [])])  # a typo would only skip the set
        for name in ("val_limit", "ood_limit"):
            v = getattr(self, name)
            if v is not None and v < 4:
                raise SuiteError(f"uncertainty: {name} must be at least 4 images or null; got {v}.")


# -- the few functions that touch other modules -----------------------------------------------------
def _corrupted(ctx: RunContext, x: "torch.Tensor", ids: list[str], name: str, severity: int) -> "torch.Tensor":
    """Images corrupted by the engine (same per-image seeds as the corruption check), in bounds."""
    from ..corruptions.engine import corrupt, corruption_seeds, to_uint8

    lo, hi = (float(b) for b in ctx.model.bounds)
    x01 = ((x.float() - lo) / (hi - lo)).clamp(0, 1).to(ctx.device)
    xc = to_uint8(corrupt(x01, name, severity, corruption_seeds(ctx.seed, name, severity, ids), protocol="auto")).float().div_(255.0)
    return xc * (hi - lo) + lo


def _validation(ctx: RunContext, p: UncertaintyParams, shape: tuple[int, ...]) -> tuple["Dataset | None", str]:
    """In-distribution validation data disjoint from the evaluation data (as the ood check gets it)."""
    from ..ood.data import plan_fit_data

    plan = plan_fit_data(ctx.run_data(), fit_data=None, fit_limit=1, val_fraction=0.2, val_limit=p.val_limit, shape=shape, seed=ctx.seed, min_fit=2)
    ok = plan.val is not None and len(plan.val) >= 20 and bool((plan.val.y >= 0).all())
    return (plan.val if ok else None), plan.val_source


def _extra_sets(ctx: RunContext, p: UncertaintyParams, shape: tuple[int, ...], res: CheckResult) -> tuple[dict[str, "Dataset"], dict[str, "Dataset"]]:
    """(label-preserving shift sets, OOD sets) by name, loaded like the ood check loads them."""
    from ..ood.data import load_set
    from ..ood.defaults import default_sets
    from ..ood.sources import set_name, strip_name

    _dom, d = default_sets(ctx.data_spec, ctx.data.spec, ctx.model.info.dataset)
    specs = {"shift": list(p.shift) if p.shift is not None else list(d.shift), "ood": list(p.ood) if p.ood is not None else [*d.near, *d.far]}
    out: dict[str, dict[str, Dataset]] = {"shift": {}, "ood": {}}
    for group, names in specs.items():
        for spec in names:
            try:
                ds = load_set(ctx.run_data(), strip_name(spec), split="test", shape=shape, limit=p.ood_limit, n_synthetic=p.synthetic_n, seed=ctx.seed)
                if group == "shift":
                    ds.check_labels(ctx.model.num_classes)
            except RobustlabError as exc:
                res.notes.append(f"{group} set {spec} skipped: {exc}")
                continue
            out[group][legal_segment(set_name(spec))] = ds
    return out["shift"], out["ood"]


@CHECKS.register("uncertainty")
class UncertaintyCheck(Check[UncertaintyParams]):
    """Failure detection, selective prediction, calibration and conformal coverage under shift.

    References: Hendrycks & Gimpel 2017; Geifman et al. 2019; Guo et al. 2017; Romano et al. 2020;
        Angelopoulos et al. 2021 (see :mod:`robustlab.uncertainty`, checked against scikit-learn
        and the conformal guarantee in tests/test_uncertainty_*.py).
    """

    name = "uncertainty"
    family = "uncertainty"
    description = "Does the model know when it is wrong: failure detection, selective risk, calibration, conformal coverage under shift."
    Params = UncertaintyParams
    runs_after = ("adversarial",)  # reads the examples the adversarial checks saved (--save-adversarial)

    def _logits(self, ctx: RunContext, tag: str, n: int, get: Any, *, content: str = "") -> "np.ndarray":
        """Logits (n, K) of ``get(start, stop)`` images, batch by batch through ``ctx.map_batches``.
        ``content``: the sha256 of a set the run fingerprint does not cover (validation, shift and OOD
        sets), so ``--resume`` never reuses logits of images that have changed since."""
        import numpy as np
        import torch

        p: UncertaintyParams = self.params
        inputs = {k: getattr(p, k) for k in ("val_limit", "ood_limit", "synthetic_n", "adv_eps", "adv_steps", "adv_limit")}
        scope = ctx.store.scope(self.id, {"check": self.name, "logits": tag, **inputs, **({"content": content} if content else {})})  # only what changes the logits

        def batch(start: int, stop: int) -> list[list[float]]:
            x = get(start, stop).to(ctx.device)
            with torch.no_grad():
                z = ctx.model(x)
            ctx.model.check_output(z, x.shape[0])
            return cast("list[list[float]]", z.float().cpu().tolist())

        parts = ctx.map_batches(scope, n, batch, desc=f"uncertainty {tag}")
        rows = [r for part in parts for r in part]
        return np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)

    def run(self, ctx: RunContext) -> CheckResult:
        import numpy as np

        from ..seeding import derive_seed
        from ..uncertainty import protocol as U
        from ..uncertainty.selective import curve_points, risk_coverage
        from ..uncertainty.scores import confidence

        t0 = time.perf_counter()
        p: UncertaintyParams = self.params
        res = self.new_result()
        P = ("uncertainty",) if self.id in ("uncertainty", self.name) else ("uncertainty", legal_segment(self.id))
        model, data = ctx.model, ctx.data
        shape = tuple(model.input_shape or data.sample_shape())
        rng = np.random.default_rng(derive_seed(ctx.seed, "uncertainty", self.id))
        settings = U.Settings(scores=tuple(p.scores), coverages=tuple(p.coverages), target_risks=tuple(p.target_risks), methods=tuple(p.methods), levels=tuple(p.levels),
                              randomized=p.randomized, raps_lam=p.raps_lam, raps_k_reg=p.raps_k_reg, ece_bins=p.ece_bins, n_boot=p.n_boot)

        # 1. validation data (fits) and test data (never fitted on) ------------------------------
        val, val_source = _validation(ctx, p, shape)
        test_idx = list(range(len(data)))
        if val is None:
            perm = rng.permutation(len(data))
            cal_idx, test_idx = sorted(int(i) for i in perm[: len(data) // 2]), sorted(int(i) for i in perm[len(data) // 2 :])
            val = data.subset(cal_idx)
            val_source = f"seeded half of the evaluation data ({len(cal_idx)} images; no disjoint validation split exists), excluded from every test metric"
            res.notes.append(f"no validation split: {val_source}.")
        test = data.subset(test_idx) if len(test_idx) != len(data) else data
        z_val = self._logits(ctx, "val", len(val), lambda a, b: val.images(slice(a, b)), content=val.content_sha256())
        fitted = U.fit(z_val, val.y.numpy(), settings, rng=np.random.default_rng(derive_seed(ctx.seed, "uncertainty-fit", self.id)))
        res.add_metric(key(*P, "calibration", "temperature"), fitted.temperature, n=fitted.n_temperature)
        if fitted.errors_in_temperature_half == 0:
            res.notes.append(f"all {fitted.n_temperature} validation predictions used to fit the temperature are correct: temperature scaling is not identifiable (NLL falls as T -> 0), so T = 1 and the risk thresholds see no errors; give more validation data (val_limit) for a fitted T.")
        if fitted.errors_in_temperature_half and fitted.temperature == 1.0:
            res.notes.append("temperature scaling did not lower the validation NLL below its value at T = 1 (e.g. logits equal across classes, which no temperature "
                             "changes), so T = 1: the calibrated probabilities are the model's own.")
        from ..uncertainty.conformal import published_qhat

        for (m, lv), cc in fitted.conformal.items():
            res.add_metric(key(*P, "conformal", m, U.level_segment(lv), "qhat"), published_qhat(m, cc.qhat) if math.isfinite(cc.qhat) else 1e9, n=cc.n)
        y = test.y.numpy()

        def record(cond: tuple[str, ...], rows: list[U.Measurement]) -> dict[tuple[str, ...], float]:
            got = {}
            for r in rows:
                k = key(*P, *r.head, *cond, r.metric)
                iv = Interval(r.low, r.high, 0.95, r.method) if r.low is not None and r.high is not None else None
                res.add_metric(k, r.value, interval=iv, n=r.n)
                got[(*r.head, r.metric)] = r.value
            return got

        def measure(cond: tuple[str, ...], z: "np.ndarray", labels: "np.ndarray | None", scores: tuple[str, ...]) -> dict[tuple[str, ...], float]:
            sub = np.random.default_rng(derive_seed(ctx.seed, "uncertainty", self.id, *cond))
            return record(cond, U.measure(z, labels, fitted, settings, scores=scores, rng=sub, set_seed=derive_seed(ctx.seed, "uncertainty-sets", self.id, *cond)))

        # 2. clean ------------------------------------------------------------------------------
        z = self._logits(ctx, "test", len(test), lambda a, b: test.images(slice(a, b)))
        by_cond: dict[tuple[str, ...], dict[tuple[str, ...], float]] = {(): measure((), z, y, tuple(p.scores))}
        ok = z.argmax(1) == y
        for d in p.detectors:
            self._detector(ctx, d, test, ok, P, rng, settings, res)
        xs: list[float] = []
        curves: dict[str, list[float | None]] = {}
        for s in p.scores:
            xs, curves[s] = curve_points(risk_coverage(confidence(s, z), ok))
        res.series["risk_coverage"] = Series(x=xs, y=curves, x_label="coverage", y_label="selective risk", kind="line")
        self._reliability(z, y, fitted.temperature, p.ece_bins, res)

        # 3. corruptions ------------------------------------------------------------------------
        pooled: dict[tuple[str, ...], tuple[list[Any], list[Any]]] = {}
        cond: tuple[str, ...]
        for sev in p.severities:
            for cname in p.corruptions:
                zc = self._logits(ctx, f"{cname}/s{sev}", len(test), lambda a, b, c=cname, s=sev: _corrupted(ctx, test.images(slice(a, b)), test.ids[a:b], c, s))
                by_cond[(severity_segment(sev), cname)] = measure((severity_segment(sev), cname), zc, y, (p.primary_score,))
                for pc in ((severity_segment(sev),), ("corruption",)):
                    pooled.setdefault(pc, ([], []))[0].append(zc)
                    pooled[pc][1].append(y)
        for pcond, (zs, ys) in pooled.items():
            cond = pcond
            by_cond[cond] = measure(cond, np.concatenate(zs), np.concatenate(ys), (p.primary_score,))

        # 4. shift and OOD sets -----------------------------------------------------------------
        shift_sets, ood_sets = _extra_sets(ctx, p, shape, res)
        for name, ds in shift_sets.items():
            zs_ = self._logits(ctx, f"shift/{name}", len(ds), lambda a, b, d=ds: d.images(slice(a, b)), content=ds.content_sha256())
            by_cond[("shift", name)] = measure(("shift", name), zs_, ds.y.numpy(), (p.primary_score,))
        for name, ds in ood_sets.items():
            zo = self._logits(ctx, f"ood/{name}", len(ds), lambda a, b, d=ds: d.images(slice(a, b)), content=ds.content_sha256())
            measure(("ood", name), zo, None, (p.primary_score,))

        # 5. adversarial: the adversarial checks' saved examples, else the check's own PGD ---------
        measure_adversarial(ctx, lambda tag, n, get: self._logits(ctx, tag, n, get), measure, p, P, test, test_idx, by_cond, res)

        # 6. per-sample, plots, definitions -----------------------------------------------------
        if p.per_sample:
            self._per_sample(res, P, len(data), test_idx, ok, confidence(p.primary_score, z), z, fitted, settings, derive_seed(ctx.seed, "uncertainty-sets", self.id))
        self._severity_series(res, by_cond, p)
        self._definitions(res, P, p, fitted, val_source, len(test))
        res.seconds = time.perf_counter() - t0
        return res

    # -- helpers -------------------------------------------------------------------------------
    def _detector(self, ctx: RunContext, name: str, test: "Dataset", ok: "np.ndarray", P: tuple[str, ...], rng: "np.random.Generator", s: Any, res: CheckResult) -> None:
        """Failure-detection metrics of an OOD detector that scores single inputs (no fitting)."""
        import numpy as np

        from ..ood.base import create_detector
        from ..uncertainty import failure as fd
        from ..uncertainty import selective as sel

        det = create_detector(name)
        if det.requires_fit:
            res.notes.append(f"detector {name} needs fitted statistics; only detectors that score a single input are used (skipped).")
            return
        scope = ctx.store.scope(self.id, {"check": self.name, "detector": name, "params": dataclasses.asdict(self.params)})
        parts = ctx.map_batches(scope, len(test), lambda a, b: [float(v) for v in det.score(ctx.model, test.images(slice(a, b)).to(ctx.device)).detach().float().cpu()], desc=f"uncertainty {name}")
        c = -np.asarray([v for part in parts for v in part], dtype=np.float64)  # higher OOD score = less confident
        for metric, stat in (("auroc", fd.auroc), ("aurc", sel.aurc)):
            fam = "failure" if metric == "auroc" else "selective"
            lo, hi = fd.bootstrap_interval(stat, c, ok, rng=rng, n_boot=s.n_boot) if s.n_boot else (math.nan, math.nan)
            res.add_metric(key(*P, fam, legal_segment(name), metric), stat(c, ok), interval=Interval(lo, hi, 0.95, "bootstrap") if s.n_boot else None, n=len(c))
        fm = fd.failure_metrics(c, ok)
        res.add_metric(key(*P, "failure", legal_segment(name), "aupr_error"), fm.aupr_error, n=len(c))
        res.add_metric(key(*P, "failure", legal_segment(name), "fpr_at_95tpr"), fm.fpr_at_95tpr, n=len(c))
        res.add_metric(key(*P, "selective", legal_segment(name), "eaurc"), sel.eaurc(c, ok), n=len(c))

    @staticmethod
    def _reliability(z: "np.ndarray", y: "np.ndarray", t: float, n_bins: int, res: CheckResult) -> None:
        from ..stats import reliability_bins
        from ..uncertainty.scores import softmax

        ys: dict[str, list[float | None]] = {}
        for tag, temp in (("raw", 1.0), ("temperature-scaled", t)):
            pr = softmax(z, temp)
            ys[tag] = reliability_bins(pr.max(1), pr.argmax(1) == y, n_bins=n_bins)["accuracy"]
        res.series["reliability"] = Series(x=[(i + 0.5) / n_bins for i in range(n_bins)], y=ys, x_label="confidence", y_label="accuracy", kind="line")

    @staticmethod
    def _per_sample(res: CheckResult, P: tuple[str, ...], n: int, test_idx: list[int], ok: "np.ndarray", conf: "np.ndarray", z: "np.ndarray", fitted: Any, s: Any, set_seed: int) -> None:
        from ..uncertainty.protocol import conformal_sets, level_segment
        from ..uncertainty.scores import softmax

        def aligned(values: list[Any]) -> list[Any]:
            out: list[Any] = [None] * n
            for i, v in zip(test_idx, values):
                out[i] = v
            return out

        res.per_sample[key(*P, "correct")] = aligned([bool(v) for v in ok])
        res.per_sample[key(*P, "confidence")] = aligned([round(float(v), 6) for v in conf])
        probs = softmax(z, fitted.temperature)
        for m, lv in fitted.conformal:
            sets = conformal_sets(fitted, probs, s, m, lv, set_seed=set_seed)
            res.per_sample[key(*P, "conformal", m, level_segment(lv), "set_size")] = aligned([int(v) for v in sets.sum(1)])

    @staticmethod
    def _severity_series(res: CheckResult, by_cond: dict[tuple[str, ...], dict[tuple[str, ...], float]], p: UncertaintyParams) -> None:
        from ..uncertainty.protocol import level_segment

        sev = sorted(set(p.severities))
        conds = [()] + [(severity_segment(s),) for s in sev]
        if not sev:
            return
        x = [0, *sev]
        for metric, name in (("coverage", "conformal_coverage_vs_severity"), ("mean_set_size", "conformal_set_size_vs_severity")):
            res.series[name] = Series(x=x, y={f"{m} {level_segment(lv)}": [by_cond.get(c, {}).get(("conformal", m, level_segment(lv), metric)) for c in conds] for m in p.methods for lv in p.levels},
                                      x_label="corruption severity (0 = clean)", y_label=metric.replace("_", " "), kind="line")
        ps = p.primary_score
        res.series["failure_vs_severity"] = Series(x=x, y={
            "accuracy": [by_cond.get(c, {}).get(("model", "accuracy")) for c in conds],
            f"failure AUROC ({ps})": [by_cond.get(c, {}).get(("failure", ps, "auroc")) for c in conds],
            "ECE (temperature-scaled)": [by_cond.get(c, {}).get(("calibration", "ts", "ece")) for c in conds],
        }, x_label="corruption severity (0 = clean)", y_label="value", kind="line")

    @staticmethod
    def _definitions(res: CheckResult, P: tuple[str, ...], p: UncertaintyParams, fitted: Any, val_source: str, n_test: int) -> None:
        base = "/".join(P)
        res.definitions.update({
            f"{base}/keys": "P/<family>/<method...>/<condition...>/<metric>; condition: none (clean test data), s<k>/<corruption>, s<k> (corruptions pooled), corruption (all pooled), shift/<set>, adversarial/pgd/eps_<e> (L-inf PGD), ood/<set>.",
            f"{base}/protocol": f"validation data: {val_source or 'val split'}; split in seeded halves: temperature T={fitted.temperature:.4g} and selective thresholds fitted on {fitted.n_temperature}, conformal quantiles on {fitted.n_conformal}; {n_test} test images never used in a fit.",
            f"{base}/model/accuracy": "top-1 accuracy under the condition; 95% Wilson interval.",
            f"{base}/failure/<score>/auroc": "P(confidence of a random correct prediction > that of a random wrong one) (+ half the ties); 95% percentile bootstrap interval (seeded).",
            f"{base}/failure/<score>/aupr_error": "average precision of detecting wrong predictions ranked by lowest confidence (errors positive).",
            f"{base}/failure/<score>/fpr_at_95tpr": "fraction of wrong predictions accepted at the confidence threshold that accepts 95% of the correct ones.",
            f"{base}/selective/<score>/aurc": "area under the risk-coverage curve, (1/n) sum_k risk of the k most confident; ties in expectation; 95% bootstrap interval.",
            f"{base}/selective/<score>/eaurc": "AURC minus the AURC of the oracle ranking at the same error rate.",
            f"{base}/selective/<score>/coverage_<c>/risk": "selective risk (error rate among accepted) on these data at the threshold giving coverage c on validation data; coverage is the achieved coverage here; Wilson intervals.",
            f"{base}/selective/<score>/risk_<r>/coverage": "coverage on these data at the smallest validation threshold with validation selective risk <= r (plug-in, no high-probability guarantee); risk is the achieved risk here.",
            f"{base}/selective/<score>/coverage_<c>/acceptance": "OOD: fraction of OOD inputs accepted by the coverage-c threshold (lower is better).",
            f"{base}/calibration/<raw|ts>/<metric>": f"ece: {p.ece_bins} equal-width bins; adaptive_ece: equal-mass bins; classwise_ece: mean over classes of binned |freq - p_k|; nll: mean -log p_y; brier: mean sum_k (p_k - 1[y=k])^2; raw = softmax, ts = softmax(z/T).",
            f"{base}/calibration/temperature": "temperature T minimising validation NLL (Guo et al. 2017); never fitted on test data.",
            f"{base}/conformal/<method>/<level>/coverage": "fraction of test points whose split-conformal prediction set contains the true label (target: level; guarantee on exchangeable data: [level, level + 1/(n_cal+1)]); 95% Wilson interval over the test points only: the draw of the n_cal calibration points adds a spread of about sqrt(level (1 - level) / (n_cal + 2)) (n_cal is the count of .../qhat). Sets on temperature-scaled probabilities, " + ("randomised (u ~ U(0,1))." if p.randomized else "non-randomised (u = 1)."),
            f"{base}/conformal/<method>/<level>/mean_set_size": "mean number of labels in the prediction set.",
            f"{base}/conformal/<method>/<level>/qhat": "calibrated score quantile: the ceil((n+1)*level)-th smallest calibration score (at least the smallest; 1e9 stands for infinity: every label), on the published scale of the method's score: lac 1 - p_y; aps the probability mass ranked above y plus u * p_y (Romano et al. 2020); raps that plus lambda * max(0, rank(y) - k_reg) (Angelopoulos et al. 2021). APS and RAPS scores are computed shifted by -1 (the mass ranked below, negated), which gives the same sets without rounding confident scores to 1.0.",
            f"{base}/conformal/<method>/<level>/ood/<set>/nonempty_rate": "fraction of OOD inputs given a non-empty prediction set (each one is a miss: the model predicts a class for an input that has none).",
        })


__all__ = ["UncertaintyCheck", "UncertaintyParams"]
