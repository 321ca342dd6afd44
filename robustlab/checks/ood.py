"""The ``ood`` check: out-of-distribution detection with the standard metrics.

For each detector (``robustlab.ood.DETECTORS``) and each OOD set (near and far groups), the check
reports AUROC, AUPR-In, AUPR-Out and FPR@95TPR, their means per group, the in-distribution accuracy,
the deployable threshold (95% TPR on in-distribution *validation* data) and the rejection rate it
gives on every set, and the accuracy on label-preserving domain-shift sets. Definitions and the
fit / validation / tuning protocol are written into the result.

Metric keys (``P`` is ``ood``, or ``ood/<entry id>`` when the suite entry has its own id):
``P/id/accuracy``, ``P/<detector>/<set>/{auroc,aupr_in,aupr_out,fpr95,rejection_rate}``,
``P/<detector>/{near,far}/{auroc,aupr_in,aupr_out,fpr95,rejection_rate}``, ``P/<detector>/threshold``,
``P/<detector>/id_acceptance``, ``P/<detector>/tuned/<param>``, ``P/shift/<set>/accuracy``,
``P/fit/n``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from typing import TYPE_CHECKING, Any

from ..errors import RobustlabError
from ..metric_keys import fpr_at_tpr, key as join_key, legal_segment
from ..scorecard import AuditItem, CheckResult, Series, Status, Verdict
from .base import CHECKS, Check, RunContext
from .ood_params import OODParams

__all__ = ["OODCheck", "OODParams"]

if TYPE_CHECKING:
    import numpy as np
    import torch

    from ..data.base import Dataset
    from ..ood.base import Detector

log = logging.getLogger(__name__)

def fpr_name(tpr: float) -> str:
    """Key of the false-positive rate at the target TPR: ``fpr95`` at 0.95 (the key baselines and gates
    name), ``fpr_at_<p>tpr`` at any other target, so a key never claims 95% when another TPR was used."""
    return "fpr95" if abs(tpr - 0.95) < 1e-12 else fpr_at_tpr(round(100.0 * tpr, 6))


def _fpr_definition(tpr: float) -> str:
    pct = f"{100.0 * tpr:g}"
    return (f"FPR@{pct}TPR (ODIN convention): fraction of OOD samples accepted (score <= t) at the smallest threshold t that accepts at "
            f"least {pct}% of the ID test samples. OpenOOD v1.5 swaps the positive class; this is not that.")


def _key(prefix: str, *names: str) -> str:
    """A key under ``prefix``; detector and set names (plugins', users') pass through ``legal_segment``."""
    return join_key(*prefix.split("/"), *(legal_segment(n) for n in names))
_NEEDS_TUNING = {"odin": ("temperature", "eps"), "mahalanobis": ("eps",)}


@CHECKS.register("ood")
class OODCheck(Check[OODParams]):
    """Out-of-distribution detection: per detector and OOD set AUROC, AUPR-In/Out, FPR@95TPR,
    near/far means, ID accuracy, deployable threshold and rejection rates, domain-shift accuracy.

    References: Hendrycks & Gimpel 2017 (protocol and metrics); Liang et al. 2018 (ODIN, FPR@95TPR);
        Lee et al. 2018 (Mahalanobis, validation on adversarial samples); Yang et al. 2022 (OpenOOD
        near/far grouping). Metrics equal scikit-learn's and pytorch-ood's (tests/test_ood_metrics.py).
    """

    name = "ood"
    family = "ood"
    description = "Out-of-distribution detection (MSP, energy, ODIN, Mahalanobis, KNN, ViM): AUROC, AUPR, FPR@95TPR, deployable threshold."
    Params = OODParams
    _fit_hash: str = ""
    _joint_memo: "dict[tuple[int, str], dict[str, np.ndarray]]"

    # -- helpers -----------------------------------------------------------------------------
    def _detector_kwargs(self, name: str) -> dict[str, Any]:
        p: OODParams = self.params
        table: dict[str, dict[str, Any]] = {
            "energy": {"temperature": p.energy_temperature},
            "odin": {k: v for k, v in (("temperature", p.odin_temperature), ("eps", p.odin_eps)) if v is not None},
            "mahalanobis": {"eps": p.mahalanobis_eps} if p.mahalanobis_eps is not None else {},
            "knn": {"k": p.knn_k},
            "vim": {"dim": p.vim_dim},
        }
        return table.get(name, {})

    def _scores(self, ctx: RunContext, dets: "dict[str, Detector]", dname: str, x_or_ds: "torch.Tensor | Dataset", what: str) -> "np.ndarray":
        """Scores (n,) of detector ``dname`` on one set (``what``: 'ID', 'ID val', a set name), stored in
        ``ctx.store`` so ``--resume`` reuses them. Detectors that need only the logits (MSP, energy,
        max-logit) are scored together from one forward pass per batch, and the others' come from
        this memo when asked for."""
        import numpy as np
        import torch

        det = dets[dname]
        group = sorted(n for n, d in dets.items() if d.logits_only) if det.logits_only else [dname]
        memo_key = (id(x_or_ds), what)
        if dname in self._joint_memo.get(memo_key, {}):
            return self._joint_memo[memo_key].pop(dname)
        n = int(x_or_ds.shape[0]) if isinstance(x_or_ds, torch.Tensor) else len(x_or_ds)
        scope = ctx.store.scope(self.id, {"params": dataclasses.asdict(self.params), "fit": self._fit_hash})
        configs = json.dumps({g: dets[g].config() for g in group}, sort_keys=True)
        desc = f"ood: {'+'.join(group)} {what}"
        # the set's content: an OOD / shift / validation file changed since the stored scores must not be reused on --resume
        key = f"{desc}|{configs}|n={n}|{self._content(x_or_ds)}"

        def batch(start: int, stop: int) -> dict[str, list[float]]:
            x = x_or_ds[start:stop] if isinstance(x_or_ds, torch.Tensor) else x_or_ds.images(slice(start, stop))
            x = x.to(ctx.device)
            if not det.logits_only:
                return {dname: [float(v) for v in det.score(ctx.model, x).detach().float().cpu()]}
            with torch.no_grad():
                logits = ctx.model(x).float()
                return {g: [float(v) for v in dets[g].score_logits(logits).detach().float().cpu()] for g in group}

        parts = ctx.map_batches(f"{scope}|{key}", n, batch, desc=desc)
        out: dict[str, np.ndarray] = {}
        for g in group:
            cols = [torch.tensor(part[g], dtype=torch.float64) for part in parts]
            scores = torch.cat(cols).numpy().astype(np.float64) if cols else np.zeros(0)
            if not np.isfinite(scores).all():
                raise RobustlabError(f"detector {g} produced non-finite scores on {what}; check the model's logits and features.")
            out[g] = scores
        self._joint_memo[memo_key] = {g: v for g, v in out.items() if g != dname}
        return out[dname]

    def _content(self, x_or_ds: "torch.Tensor | Dataset") -> str:
        """sha256 of a set's images (a tensor's bytes, a data set's ``content_sha256``), once per object."""
        import hashlib

        import torch

        memo = self._content_memo
        if id(x_or_ds) not in memo:
            if isinstance(x_or_ds, torch.Tensor):
                memo[id(x_or_ds)] = (x_or_ds, hashlib.sha256(x_or_ds.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest())
            else:
                memo[id(x_or_ds)] = (x_or_ds, x_or_ds.content_sha256())
        return str(memo[id(x_or_ds)][1])

    @staticmethod
    def _accuracy(ctx: RunContext, ds: "Dataset", desc: str) -> tuple[list[bool], int]:
        import torch

        correct: list[bool] = []
        n_b = math.ceil(len(ds) / ctx.batch_size)
        with torch.no_grad():
            for _s, x, y in ctx.track(ds.batches(ctx.batch_size), total=n_b, desc=desc):
                logits = ctx.model(x.to(ctx.model.device))
                ctx.model.check_output(logits, x.shape[0])  # NaN would be an arbitrary argmax, not a prediction
                correct.extend((logits.argmax(1).cpu() == y).tolist())
        return correct, sum(correct)

    # -- run ---------------------------------------------------------------------------------
    def run(self, ctx: RunContext) -> CheckResult:
        from ..stats import wilson_interval
        from ..ood import metrics as M
        from ..ood.base import DetectorError, create_detector
        from ..ood.data import load_set, plan_fit_data, refuse_id_overlap
        from ..ood.defaults import default_sets
        from ..ood.sources import set_name, strip_name

        t0 = time.perf_counter()
        p: OODParams = self.params
        self._joint_memo = {}
        self._content_memo: dict[int, tuple[Any, str]] = {}
        result = self.new_result()
        P = "ood" if self.id in ("ood", self.name) else f"ood/{self.id}"
        model = ctx.model
        shape = tuple(model.input_shape or ctx.data.sample_shape())
        domain, defaults = default_sets(ctx.data_spec, ctx.data.spec, model.info.dataset)
        groups = {
            "near": list(p.near) if p.near is not None else list(defaults.near),
            "far": list(p.far) if p.far is not None else list(defaults.far),
        }
        shift_specs = list(p.shift) if p.shift is not None else list(defaults.shift)
        if p.near is None or p.far is None or p.shift is None:
            result.notes.append(f"default OOD sets for domain {domain or 'unknown'}: near={groups['near']}, far={groups['far']}, shift={shift_specs}.")
        result.definitions.update({_key(P, *k.split("/")): v for k, v in M.DEFINITIONS.items() if k != "fpr95"})
        fk = fpr_name(p.tpr)
        result.definitions[_key(P, fk)] = _fpr_definition(p.tpr)

        # 1. ID accuracy --------------------------------------------------------------------
        correct, k = self._accuracy(ctx, ctx.data, "ood: ID accuracy")
        result.add_metric(_key(P, "id", "accuracy"), k / max(1, len(correct)), interval=wilson_interval(k, len(correct)), n=len(correct))
        result.per_sample[_key(P, "id", "correct")] = correct

        # 2. OOD and shift sets -------------------------------------------------------------
        sets: dict[str, tuple[str, "torch.Tensor"]] = {}  # name -> (group, x)
        shift_sets: dict[str, "Dataset"] = {}
        for group, specs in (*groups.items(), ("shift", shift_specs)):
            for spec in specs:
                name = set_name(spec)
                while name in sets or name in shift_sets or name in ("near", "far", "id", "shift", "fit", "threshold"):
                    name += "_"
                try:
                    ds = load_set(ctx.run_data(), strip_name(spec), split="test", shape=shape, limit=p.ood_limit, n_synthetic=p.synthetic_n, seed=ctx.seed)
                except RobustlabError as exc:
                    result.notes.append(f"skipped {group} set {spec}: {exc}")
                    result.audit.append(AuditItem("ood_set_missing", Verdict.SUSPECT, f"{group} set {spec} could not be loaded; its metrics are absent.", {"error": str(exc)}))
                    continue
                if group == "shift":
                    shift_sets[name] = ds
                else:
                    assert ds.x is not None
                    refuse_id_overlap(ds, ctx.run_data(), strip_name(spec), f"ood: {group} set {spec!r}")
                    sets[name] = (group, ds.x)
                result.definitions[_key(P, "sets", name)] = f"{group}: {spec} ({len(ds)} images, adapted to {shape} in bounds {list(model.bounds)})"
        if not sets:
            result.status = Status.SKIPPED
            result.reason = "no OOD set could be loaded; name near/far sets that exist offline (e.g. samples:cifar100, noise:uniform)."
            return result
        for name, ds in shift_sets.items():
            try:
                ds = ds.match_classes(model.info.class_names, model.num_classes)  # folder: labels by class name
                ds.check_labels(model.num_classes)
            except RobustlabError as exc:
                result.notes.append(f"shift set {name}: labels do not match the model ({exc}); accuracy not reported.")
                continue
            c, kk = self._accuracy(ctx, ds, f"ood: shift {name}")
            result.add_metric(_key(P, "shift", name, "accuracy"), kk / len(c), interval=wilson_interval(kk, len(c)), n=len(c))

        # 3. Detectors, fit data, fitting with cache ----------------------------------------
        dets: dict[str, Detector] = {}
        for name, own in p.detector_specs():
            dets[name] = create_detector(name, **{**self._detector_kwargs(name), **own})
        plan = plan_fit_data(ctx.run_data(), fit_data=p.fit_data, fit_limit=p.fit_limit, val_fraction=p.val_fraction, val_limit=p.val_limit, shape=shape, seed=ctx.seed, min_fit=max(2 * model.num_classes, 20))
        result.notes.extend(plan.notes)
        protocol = (
            f"fit data: {plan.fit_source or 'none'}; ID validation data: {plan.val_source or 'none (ID test scores used)'}; "
            "fit and validation images never include evaluation images (matching ids are dropped)."
        )
        result.definitions[_key(P, "protocol")] = protocol
        self._fit_hash = plan.fit.content_sha256() if plan.fit is not None else ""
        if plan.fit is None or plan.val is None:
            result.audit.append(AuditItem("ood_fit_validation_data", Verdict.SUSPECT, "; ".join(plan.notes) or protocol))
        self._fit(ctx, dets, plan.fit, p, result, P)

        # 4. Tuning ODIN / Mahalanobis on validation data -----------------------------------
        self._tune(ctx, dets, plan.val, p, result, P)

        # 5. Scores and metrics -------------------------------------------------------------
        small = [n for n, (_g, x) in sets.items() if x.shape[0] < 100] + (["ID test"] if len(ctx.data) < 100 else [])
        if small:
            result.audit.append(AuditItem("ood_small_sets", Verdict.SUSPECT, f"fewer than 100 images in {', '.join(small)}: AUROC and FPR@95TPR are uncertain by several points.", {"sets": small}))
        for dname, det in dets.items():
            try:
                id_scores = self._scores(ctx, dets, dname, ctx.data, "ID")
            except DetectorError as exc:
                _skip_detector(result, dname, str(exc))
                continue
            result.per_sample[_key(P, dname, "score")] = [float(v) for v in id_scores]
            val_scores = self._scores(ctx, dets, dname, plan.val, "ID val") if plan.val is not None else id_scores
            thr = M.threshold_at_tpr(val_scores, p.tpr)
            result.add_metric(_key(P, dname, "threshold"), thr, n=len(val_scores))
            acc_id = 1.0 - M.rejection_rate(id_scores, thr)
            n_acc = int(round(acc_id * len(id_scores)))
            ci = wilson_interval(n_acc, len(id_scores))
            result.add_metric(_key(P, dname, "id_acceptance"), acc_id, interval=ci, n=len(id_scores))
            if plan.val is not None and not ci.low - 0.01 <= p.tpr <= ci.high + 0.01:
                result.audit.append(AuditItem(
                    "ood_threshold_transfer", Verdict.SUSPECT,
                    f"{dname}: the threshold set for {p.tpr:.0%} acceptance on validation data accepts {acc_id:.1%} of the ID test data; the validation data "
                    "does not match the deployment distribution (e.g. JPEG vs lossless images), so recalibrate the threshold on matching data.",
                    {"detector": dname, "id_acceptance": acc_id, "target": p.tpr, "interval": [ci.low, ci.high]},
                ))
            by_group: dict[str, list[dict[str, float]]] = {"near": [], "far": []}
            group_n: dict[str, list[int]] = {"near": [], "far": []}
            roc_y: dict[str, list[float | None]] = {}
            grid_x: list[float] = []
            for sname, (group, x) in sets.items():
                s = self._scores(ctx, dets, dname, x, sname)
                m = M.ood_metrics(id_scores, s, tpr=p.tpr)
                rej = M.rejection_rate(s, thr)
                vals = {"auroc": m.auroc, "aupr_in": m.aupr_in, "aupr_out": m.aupr_out, fk: m.fpr95, "rejection_rate": rej}
                for key, v in vals.items():
                    interval = wilson_interval(int(round(rej * len(s))), len(s)) if key == "rejection_rate" else None
                    result.add_metric(_key(P, dname, sname, key), v, interval=interval, n=len(s))
                by_group[group].append(vals)
                group_n[group].append(len(s))
                grid_x, tpr_line = M.roc_points(id_scores, s)
                roc_y[sname] = list(tpr_line)
            for sname, ds in shift_sets.items():
                s = self._scores(ctx, dets, dname, ds.x if ds.x is not None else ds, f"shift {sname}")
                rej = M.rejection_rate(s, thr)
                result.add_metric(_key(P, dname, sname, "rejection_rate"), rej, interval=wilson_interval(int(round(rej * len(s))), len(s)), n=len(s))
            for group, rows in by_group.items():
                if rows:
                    for key in ("auroc", "aupr_in", "aupr_out", fk, "rejection_rate"):
                        # n: the smallest set behind the mean (a gate's min_samples must not read the ID set's size)
                        result.add_metric(_key(P, dname, group, key), sum(r[key] for r in rows) / len(rows), n=min(group_n[group]))
                    far_bad = [r for r in rows if r["auroc"] < 0.5]
                    if group == "far" and far_bad:
                        result.audit.append(AuditItem("ood_worse_than_chance", Verdict.SUSPECT, f"{dname} ranks some far-OOD set below in-distribution data (AUROC < 0.5); do not deploy it for such inputs.", {"detector": dname}))
            result.series[_key(P, dname, "roc")] = Series(x=grid_x, y=roc_y, x_label="FPR (ID flagged as OOD)", y_label="TPR (OOD flagged)", kind="roc")
            result.definitions[_key(P, dname, "config")] = str(det.config())
        result.seconds = time.perf_counter() - t0
        return result

    # -- fitting -----------------------------------------------------------------------------
    def _fit(self, ctx: RunContext, dets: "dict[str, Detector]", fit: "Dataset | None", p: OODParams, result: CheckResult, P: str) -> None:
        from ..ood.base import DetectorError, FitFeatures, dataset_batches, extract_fit_features
        from ..ood.cache import cache_key, load_state, model_fingerprint, save_state

        need = [n for n, d in dets.items() if d.requires_fit]
        if not need:
            return
        if fit is None:
            for n in need:
                dets.pop(n)
                _skip_detector(result, n, "it needs in-distribution fit data (set fit_data).")
            return
        mfp = model_fingerprint(ctx.model)
        dfp = self._fit_hash
        keys: dict[str, str] = {}
        missing = []
        for n in need:
            det = dets[n]
            fit_cfg = {k: v for k, v in det.config().items() if k not in det.tunable}
            keys[n] = cache_key(model=mfp, feature_layer=ctx.model.info.feature_layer, data=dfp, detector=n, config=fit_cfg, version=1)
            state = load_state(keys[n]) if p.cache else None
            if state is not None:
                det.load_fit_state(state)
                log.info("%s: fitted statistics loaded from the cache (key %s)", n, keys[n])  # a log line, not a note: the scorecard is the same either way
            else:
                missing.append(n)
        passes = 0
        if missing:
            feats: FitFeatures | None = None  # one pass for all; a model without readable features (TorchScript) skips them all
            passes = 1
            for n in missing:
                try:
                    feats = extract_fit_features(ctx.model, ctx.track(dataset_batches(fit, ctx.batch_size), total=math.ceil(len(fit) / ctx.batch_size), desc="ood: fit features")) if feats is None else feats
                    dets[n].fit_features(feats, ctx.model)
                except DetectorError as exc:
                    dets.pop(n)
                    _skip_detector(result, n, str(exc))
                    continue
                if p.cache:
                    save_state(keys[n], dets[n].fit_state(), {"detector": n, "model": mfp, "data": dfp})
        result.add_metric(_key(P, "fit", "n"), len(fit))
        # Forward passes over the fit data in this run (0 when every fitted detector came from the cache; all detectors
        # share one pass). Not a metric: the same seed gives the same scorecard whether or not a cache was warm.
        self.fit_passes = passes

    # -- tuning ------------------------------------------------------------------------------
    def _tune(self, ctx: RunContext, dets: "dict[str, Detector]", val: "Dataset | None", p: OODParams, result: CheckResult, P: str) -> None:
        import torch

        from ..ood.data import load_set, seeded_subset
        from ..ood.sources import strip_name
        from ..ood.tuning import fgsm_images, make_grid, tune

        fixed: dict[str, dict[str, Any]] = {"odin": {"temperature": p.odin_temperature, "eps": p.odin_eps}, "mahalanobis": {"eps": p.mahalanobis_eps}}
        for n, own in p.detector_specs():  # a detector entry's own parameters are fixed, never tuned
            fixed.get(n, {}).update({k: v for k, v in own.items() if k in fixed.get(n, {})})
        grids = {"odin": {"temperature": p.odin_temperatures, "eps": p.odin_eps_grid}, "mahalanobis": {"eps": p.mahalanobis_eps_grid}}
        todo = [n for n in _NEEDS_TUNING if n in dets and any(v is None for v in fixed[n].values())]
        for n in (x for x in _NEEDS_TUNING if x in dets):
            for k in _NEEDS_TUNING[n]:
                result.add_metric(_key(P, n, "tuned", k), float(getattr(dets[n], k)))
        if not todo:
            return
        if val is None:
            for n in todo:
                result.notes.append(f"{n}: no validation data, so its hyperparameters keep their paper defaults {dets[n].config()}.")
            return
        x_id = seeded_subset(val, p.tune_n, ctx.seed, "ood-tune").images()
        if p.tune_ood == "fgsm":
            x_ood = torch.cat([fgsm_images(ctx.model, x_id[s : s + ctx.batch_size], eps=p.tune_fgsm_eps).cpu() for s in range(0, x_id.shape[0], ctx.batch_size)])
            what = f"FGSM-perturbed ID validation images (eps={p.tune_fgsm_eps} of the bounds' width, Lee et al. 2018)"
        else:
            x_ood = load_set(ctx.run_data(), strip_name(p.tune_ood), split="val", shape=x_id.shape[1:], limit=p.tune_n, n_synthetic=p.tune_n, seed=ctx.seed + 1).images()
            what = f"{p.tune_ood} (not a test OOD set)"
        for n in todo:
            values = {k: ([v] if v is not None else grids[n][k]) for k, v in fixed[n].items()}
            res = tune(dets[n], ctx.model, x_id, x_ood, make_grid(values), batch_size=ctx.batch_size, tpr=p.tpr, track=ctx.track)
            for k, v in res.chosen.items():
                result.add_metric(_key(P, n, "tuned", k), v)
            result.add_metric(_key(P, n, "tuning", fpr_name(p.tpr)), res.fpr95, n=x_id.shape[0])
            result.add_metric(_key(P, n, "tuning", "auroc"), res.auroc, n=x_id.shape[0])
            result.definitions[_key(P, n, "tuning")] = (
                f"{n} hyperparameters {sorted(values)} chosen from the grid {values} by the lowest FPR@{p.tpr:.0%}TPR (ties: higher AUROC) "
                f"between {x_id.shape[0]} ID validation images and {x_ood.shape[0]} {what}; chosen {res.chosen}."
            )


def _skip_detector(result: CheckResult, name: str, reason: str) -> None:
    """Record that a requested detector did not run: a note, and an audit item the report and gates show."""
    result.notes.append(f"detector {name} skipped: {reason}")
    result.audit.append(AuditItem(
        "ood_detector_skipped", Verdict.SUSPECT,
        f"detector {name} was requested but did not run, so its metrics are absent: {reason}",
        {"detector": name, "reason": reason},
    ))


__all__ = ["OODCheck", "OODParams"]
