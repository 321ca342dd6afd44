"""The ``corruption`` check: accuracy and calibration under the ImageNet-C common corruptions,
CE / mCE / relative mCE against a baseline, the corruption x severity grid for the report."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..corruptions.names import BENCHMARK, HELD_OUT
from ..errors import SuiteError
from ..metric_keys import NAME_ANY, SEVERITY_ANY, key, legal_segment, pattern, severity_segment
from ..stats import expected_calibration_error, wilson_interval
from ..scorecard import AuditItem, CheckResult, Series, Verdict
from .base import CHECKS, Check, RunContext
from .corruption_params import BASELINE_WORDS, CorruptionParams

__all__ = ["CorruptionCheck", "CorruptionParams"]

log = logging.getLogger(__name__)


@dataclass
class _Cell:
    correct: np.ndarray  # (n,) bool
    conf: np.ndarray  # (n,) float


def _cell(parts: list[dict[str, list[Any]]]) -> "_Cell":
    correct = [c for part in parts for c in part["correct"]]
    conf = [f for part in parts for f in part["conf"]]
    return _Cell(np.asarray(correct, dtype=bool), np.asarray(conf, dtype=np.float64))


@CHECKS.register("corruption")
class CorruptionCheck(Check[CorruptionParams]):
    """Top-1 accuracy and ECE for every (corruption, severity), mean corruption accuracy and error,
    CE / mCE / relative mCE against a baseline, worst corruption, and the grid for a heat map.

    Shapes: images (N, C, H, W) in ``model.bounds`` are mapped to [0, 1], corrupted with
    :func:`robustlab.corruptions.engine.corrupt` (seeded per run seed, corruption, severity and
    sample id), mapped back and classified: logits (N, K).
    References: Hendrycks & Dietterich, ICLR 2019 (ImageNet-C, CE, mCE, relative mCE);
    ``imagecorruptions`` (reference backend); Guo et al. 2017 (ECE).
    """

    name = "corruption"
    family = "corruption"
    description = "Accuracy and ECE under the 19 ImageNet-C corruptions x 5 severities; mCE against a baseline."
    Params = CorruptionParams

    @property
    def prefix(self) -> str:
        """Metric key prefix: ``corruption`` for the entry id ``corruption`` (the default), else
        ``corruption/<id>`` so that several corruption entries of one suite never collide."""
        return "corruption" if self.id == self.name else f"corruption/{self.id}"

    def key(self, *segments: str) -> str:
        """A metric key under :attr:`prefix` (corruption names pass through ``legal_segment``)."""
        return key(*self.prefix.split("/"), *segments)

    def key_pattern(self, *segments: str) -> str:
        return pattern(*self.prefix.split("/"), *segments)

    # -- evaluation ---------------------------------------------------------------------------
    def _classify(self, ctx: RunContext, x01: torch.Tensor, y: torch.Tensor) -> dict[str, list[Any]]:
        lo, hi = (float(b) for b in ctx.model.bounds)
        x = (x01 * (hi - lo) + lo).to(ctx.device)
        with torch.no_grad():
            logits = ctx.model(x)
        ctx.model.check_output(logits, x.shape[0])
        # the prediction is the logits' argmax: a float32 softmax of near-tied logits rounds to ties (all 1/K
        # for logits of ~1e-9, e.g. an untrained MobileNetV3), whose argmax would be class 0
        conf, pred = torch.softmax(logits.float(), dim=1).amax(dim=1), logits.argmax(dim=1)
        return {"correct": (pred.cpu() == y.cpu()).to(torch.int8).tolist(), "conf": [round(float(c), 7) for c in conf.cpu()]}

    def _clean(self, ctx: RunContext, scope: str) -> _Cell:
        lo, hi = (float(b) for b in ctx.model.bounds)

        def batch(start: int, stop: int) -> dict[str, list[Any]]:
            x = ctx.data.images(slice(start, stop))
            return self._classify(ctx, ((x.float() - lo) / (hi - lo)).clamp(0, 1), ctx.data.y[start:stop])

        return _cell(ctx.map_batches(f"{scope}|clean", len(ctx.data), batch, desc=f"{self.id} clean"))

    def _resolve_protocol(self, ctx: RunContext, pre: Any) -> tuple[str, str]:
        """(protocol name, source of its constants) for this run; ``auto`` resolved from the data."""
        from ..corruptions.protocol import Protocol, resolve

        p: CorruptionParams = self.params
        if pre is not None:
            manifest = getattr(pre, "manifest", None) or {}
            if manifest.get("protocol"):
                name = str(manifest["protocol"])
                source = f"pre-rendered by robustlab corrupt ({pre.root}); {manifest.get('protocol_source', '')}".rstrip("; ")
            else:
                name = "cifar-c" if pre.layout == "cifar-c" else "imagenet-c"
                source = f"pre-rendered {pre.layout} files in {pre.root} (as published by their authors)"
            if p.protocol != "auto" and p.protocol != name:
                raise SuiteError(f"corruption.protocol is {p.protocol} but the precomputed set {pre.root} was rendered under {name}; set protocol: {name} (or auto) or render the set under {p.protocol}.")
            return name, source
        shape = ctx.data.sample_shape() if len(ctx.data) else ()
        h, w = (int(shape[-2]), int(shape[-1])) if len(shape) == 3 else (0, 0)
        requested = p.protocol
        named = str(ctx.options.get("dataset") or "")
        if requested == "auto" and named:
            from ..data.naming import auto_protocol

            requested = auto_protocol(named) or "auto"
        proto = resolve(requested, h, w) if h and w else Protocol.parse(requested if requested != "auto" else "imagenet-c")
        why = f" (auto: data set named {named})" if p.protocol == "auto" and named else (f" (auto: {h}x{w} images)" if p.protocol == "auto" else "")
        log.info("corruption protocol: %s%s", proto.value, why)
        return proto.value, proto.source + why

    _protocol: str = "imagenet-c"

    def _on_the_fly(self, ctx: RunContext, scope: str, name: str, severity: int) -> _Cell:
        from ..corruptions.engine import Backend, corrupt, corruption_seeds, to_uint8

        p: CorruptionParams = self.params
        backend = Backend.parse(p.backend)
        lo, hi = (float(b) for b in ctx.model.bounds)

        def batch(start: int, stop: int) -> dict[str, list[Any]]:
            x = ctx.data.images(slice(start, stop))
            seeds = corruption_seeds(ctx.seed, name, severity, ctx.data.ids[start:stop])
            x01 = ((x.float() - lo) / (hi - lo)).clamp(0, 1)
            x01 = x01.to(ctx.device if backend is Backend.FAST else "cpu")
            xc = to_uint8(corrupt(x01, name, severity, seeds, backend=backend, protocol=self._protocol)).float().div_(255.0)
            return self._classify(ctx, xc, ctx.data.y[start:stop])

        return _cell(ctx.map_batches(f"{scope}|{name}/s{severity}", len(ctx.data), batch, desc=f"{name} s{severity}"))

    def _from_files(self, ctx: RunContext, scope: str, pre: Any, name: str, severity: int) -> _Cell:
        from ..data.base import adapt_images

        p: CorruptionParams = self.params
        n = pre.count(name, severity)
        if p.precomputed_limit is not None:
            n = min(n, p.precomputed_limit)
        labels = pre.labels(name, severity)[:n]
        shape = ctx.model.input_shape

        def batch(start: int, stop: int) -> dict[str, list[Any]]:
            idx = list(range(start, stop))
            x = pre.images(name, severity, idx)
            if shape is not None and tuple(x.shape[1:]) != tuple(shape):
                x = adapt_images(x, shape)
            return self._classify(ctx, x, labels[idx])

        # the cell's files (size, mtime) are part of the key: replaced files are recomputed on --resume, never read from the store
        return _cell(ctx.map_batches(f"{scope}|pre/{name}/s{severity}|{pre.cell_fingerprint(name, severity)[:16]}", n, batch, desc=f"{name} s{severity}"))

    # -- main ---------------------------------------------------------------------------------
    def run(self, ctx: RunContext) -> CheckResult:
        p: CorruptionParams = self.params
        res = self.new_result()
        sevs = sorted(p.severities)
        names = p.names()
        pre = None
        if p.precomputed is not None:
            from ..corruptions.precomputed import open_precomputed

            pre = open_precomputed(p.precomputed, names)
            n_classes = int(ctx.model.num_classes)
            top = max(int(pre.labels(names[0], sevs[0]).max()), 0)
            if top >= n_classes:
                from ..errors import DataError

                raise DataError(f"precomputed set {pre.root} has label {top} but the model has {n_classes} classes; use the set that matches the model (CIFAR-10-C for 10 classes, CIFAR-100-C for 100, ImageNet-C for 1000).")
        self._protocol, source = self._resolve_protocol(ctx, pre)
        res.params["protocol_resolved"] = self._protocol
        res.params["protocol_source"] = source
        scope = ctx.store.scope(self.id, {"check": self.name, **res.params})

        clean = self._clean(ctx, scope)
        clean_acc = float(clean.correct.mean()) if clean.correct.size else math.nan
        n_clean = int(clean.correct.size)
        res.add_metric(self.key("clean", "accuracy"), clean_acc, interval=wilson_interval(int(clean.correct.sum()), n_clean), n=n_clean)

        cells: dict[tuple[str, int], _Cell] = {}
        jobs = [(c, s) for c in names for s in sevs]
        for name, sev in ctx.track(jobs, total=len(jobs), desc="corruption"):
            cells[(name, sev)] = self._from_files(ctx, scope, pre, name, sev) if pre is not None else self._on_the_fly(ctx, scope, name, sev)

        acc: dict[str, dict[int, float]] = {}
        ece: dict[str, dict[int, float]] = {}
        for (name, sev), cell in cells.items():
            n = int(cell.correct.size)
            k = int(cell.correct.sum())
            a = k / n if n else math.nan
            e = expected_calibration_error(cell.conf, cell.correct, n_bins=p.ece_bins) if n else math.nan
            acc.setdefault(name, {})[sev] = a
            ece.setdefault(name, {})[sev] = e
            res.add_metric(self.key(legal_segment(name), severity_segment(sev), "accuracy"), a, interval=wilson_interval(k, n), n=n)
            res.add_metric(self.key(legal_segment(name), severity_segment(sev), "ece"), e, n=n)
        n_cell = int(next(iter(cells.values())).correct.size) if cells else 0
        per_corr_acc = {c: float(np.mean([acc[c][s] for s in sevs])) for c in names}
        per_corr_ece = {c: float(np.mean([ece[c][s] for s in sevs])) for c in names}
        for c in names:
            res.add_metric(self.key(legal_segment(c), "accuracy"), per_corr_acc[c], n=n_cell * len(sevs))
            res.add_metric(self.key(legal_segment(c), "ece"), per_corr_ece[c], n=n_cell * len(sevs))

        bench = [c for c in names if c in BENCHMARK]
        held = [c for c in names if c in HELD_OUT]
        main = bench or list(names)
        mean_acc = float(np.mean([per_corr_acc[c] for c in main]))
        res.add_metric(self.key("mean_accuracy"), mean_acc, n=n_cell * len(sevs) * len(main))
        res.add_metric(self.key("mean_error"), 1.0 - mean_acc, n=n_cell * len(sevs) * len(main))
        res.add_metric(self.key("ece"), float(np.mean([per_corr_ece[c] for c in main])), n=n_cell * len(sevs) * len(main))
        if held and bench:
            res.add_metric(self.key("held_out", "mean_accuracy"), float(np.mean([per_corr_acc[c] for c in held])), n=n_cell * len(sevs) * len(held))
        worst = min(names, key=lambda c: per_corr_acc[c])
        res.add_metric(self.key("worst", "accuracy"), per_corr_acc[worst], n=n_cell * len(sevs))
        res.notes.append(f"Worst corruption: {worst} (mean accuracy {per_corr_acc[worst]:.4f} over severities {sevs}).")

        self._baseline_metrics(ctx, res, acc, clean_acc, bench, sevs)

        res.series["grid"] = Series(
            x=sevs, rows=list(names), y={c: [acc[c][s] for s in sevs] for c in names},
            x_label="severity", y_label="accuracy", kind="grid",
        )
        res.series["ece_grid"] = Series(
            x=sevs, rows=list(names), y={c: [ece[c][s] for s in sevs] for c in names},
            x_label="severity", y_label="ECE", kind="grid",
        )
        res.series["accuracy_by_severity"] = Series(
            x=[0] + sevs, y={"mean accuracy": list[float | None]([float(clean_acc)] + [float(np.mean([acc[c][s] for c in main])) for s in sevs])},
            x_label="severity (0 = clean)", y_label="accuracy", kind="line",
        )
        if p.per_sample and pre is None and cells:
            counts = np.sum([cell.correct.astype(np.int64) for cell in cells.values()], axis=0)
            res.per_sample["corruption_correct_cells"] = [int(v) for v in counts]

        self._audit(res, clean_acc, mean_acc, acc, sevs)
        self._describe(ctx, res, p, worst, main, pre)
        res.definitions[self.key("protocol")] = f"corruption protocol {self._protocol}: {source}."
        if self._protocol == "cifar-c" and len(bench) == len(BENCHMARK) and sevs == [1, 2, 3, 4, 5]:
            res.notes.append("Protocol cifar-c over the 15 benchmark corruptions x 5 severities: corruption/mean_accuracy is aggregated as RobustBench's corruption leaderboard (unweighted mean of the 75 cells).")
        return res

    def _baseline_metrics(self, ctx: RunContext, res: CheckResult, acc: dict[str, dict[int, float]], clean_acc: float, bench: list[str], sevs: list[int]) -> None:
        from ..corruptions.metrics import Baseline, alexnet_baseline, corruption_error, relative_corruption_error
        from .corruption_baseline import baseline_from_scorecard

        p: CorruptionParams = self.params
        base: Baseline | None = None
        choice = p.baseline or "none"
        if choice == "alexnet" or (choice == "auto" and int(ctx.model.num_classes) == 1000):
            base = alexnet_baseline()
        elif choice not in BASELINE_WORDS:
            base = baseline_from_scorecard(choice)
        if base is None:
            res.notes.append("No baseline: mCE is not defined without one, so the unnormalised mean corruption error (corruption/mean_error) is reported instead. Pass baseline: <scorecard.json of a baseline model> to get CE and mCE.")
            return
        if base.name == "alexnet" and p.precomputed is None:
            res.notes.append("AlexNet's published errors were measured on the released ImageNet-C files (saved as JPEG by the original code); images corrupted on the fly differ slightly, so CE against AlexNet is close to but not exactly the published protocol. Use precomputed: <ImageNet-C folder> for the standard mCE.")
        if base.num_classes is not None and int(base.num_classes) != int(ctx.model.num_classes):
            res.notes.append(f"Baseline {base.name} was measured on {base.num_classes}-class data but this model has {ctx.model.num_classes} classes; its CE values compare different tasks.")
        ces: dict[str, float] = {}
        rces: dict[str, float] = {}
        clean_err = 1.0 - clean_acc
        for c in acc:
            errs = {s: 1.0 - acc[c][s] for s in sevs}
            ce = corruption_error(errs, base, c)
            if ce is not None:
                ces[c] = ce
                res.add_metric(self.key(legal_segment(c), "ce"), ce)
            rce = relative_corruption_error(errs, clean_err, base, c)
            if rce is not None:
                rces[c] = rce
                res.add_metric(self.key(legal_segment(c), "relative_ce"), rce)
        # CE sums over the severities both sides have; published CE and mCE need all five (Hendrycks & Dietterich 2019)
        five = {1, 2, 3, 4, 5}
        short = sorted(c for c in set(ces) | set(rces) if not five <= set(sevs) & (set(base.errors[c]) if c in base.errors else five))
        covered = [c for c in bench if c in ces]
        complete = len(covered) == len(BENCHMARK) and not any(c in short for c in covered)
        suffix = "" if complete else "_partial"
        if covered:
            res.add_metric(self.key(f"mce{suffix}"), float(np.mean([ces[c] for c in covered])))
        rcovered = [c for c in bench if c in rces]
        if rcovered:
            r_complete = len(rcovered) == len(BENCHMARK) and not any(c in short for c in rcovered)
            res.add_metric(self.key(f"relative_mce{'' if r_complete else '_partial'}"), float(np.mean([rces[c] for c in rcovered])))
        if short:
            res.notes.append(f"CE of {', '.join(short)} sums over severities {sorted(set(sevs) & set().union(*(set(base.errors.get(c, five)) for c in short)))} only "
                             "(those the model and the baseline share), not all five: their ce and relative_ce are not the published CE.")
        if not complete:
            res.notes.append(f"mCE over {len(covered)} of the 15 benchmark corruptions ({', '.join(covered) or 'none'})"
                             + (", not all at five severities," if any(c in short for c in covered) else "")
                             + " is reported as corruption/mce_partial; it is not comparable with published mCE, which needs all 15 at all five severities.")
        missing = [c for c in acc if c not in ces]
        if missing:
            res.notes.append(f"No CE for {', '.join(missing)}: the baseline {base.name} has no errors for them (or, for AlexNet's published means, not all five severities were evaluated).")
        r_missing = [c for c in ces if c not in rces]
        if r_missing:
            why = ("the baseline's clean error is unknown" if base.clean_error is None
                   else "the baseline's corrupted error does not exceed its clean error there, so the ratio is undefined")
            res.notes.append(f"No relative CE for {', '.join(r_missing)}: {why}" + ("; relative mCE is reported as corruption/relative_mce_partial." if rcovered else "."))
        res.definitions[self.key("baseline")] = f"baseline: {base.name} ({base.source}); clean error {base.clean_error if base.clean_error is not None else 'unknown'}."

    def _audit(self, res: CheckResult, clean_acc: float, mean_acc: float, acc: dict[str, dict[int, float]], sevs: list[int]) -> None:
        if math.isfinite(clean_acc) and mean_acc > clean_acc + 0.02:
            res.audit.append(AuditItem(
                "corruption_below_clean", Verdict.SUSPECT,
                f"mean corruption accuracy {mean_acc:.4f} exceeds clean accuracy {clean_acc:.4f}: corruptions may not reach the model (check model bounds and preprocessing).",
                {"clean_accuracy": clean_acc, "mean_accuracy": mean_acc},
            ))
        else:
            res.audit.append(AuditItem("corruption_below_clean", Verdict.VALID, "mean corruption accuracy does not exceed clean accuracy.", {"clean_accuracy": clean_acc, "mean_accuracy": mean_acc}))
        if len(sevs) >= 2:
            rising = [c for c in acc if acc[c][sevs[-1]] > acc[c][sevs[0]] + 0.05]
            verdict = Verdict.SUSPECT if rising else Verdict.VALID
            msg = (f"accuracy rises by more than 5 points from severity {sevs[0]} to {sevs[-1]} for {', '.join(rising)}." if rising else "no corruption gains more than 5 points of accuracy as severity grows.")
            res.audit.append(AuditItem("severity_monotone", verdict, msg, {"rising": rising}))

    def _describe(self, ctx: RunContext, res: CheckResult, p: CorruptionParams, worst: str, main: list[str], pre: Any) -> None:
        bench_word = "the benchmark corruptions" if any(c in BENCHMARK for c in p.names()) else "the corruptions"
        res.definitions.update({
            self.key_pattern(NAME_ANY, SEVERITY_ANY, "accuracy"): "top-1 accuracy on all n images under corruption <name> at severity k; 95% Wilson interval. E(f, s, c) = 1 - this.",
            self.key_pattern(NAME_ANY, "accuracy"): "mean of the per-severity accuracies of one corruption.",
            self.key("mean_accuracy"): f"mean corruption accuracy: unweighted mean of the (corruption, severity) cell accuracies over {bench_word} of this run ({', '.join(main)}) and severities {sorted(p.severities)} (equal n per cell, so it is also the accuracy over all corrupted images); with all 15 x 5 cells under protocol cifar-c this is RobustBench's corruption aggregate. Held-out corruptions are reported separately (corruption/held_out/mean_accuracy).",
            self.key("mean_error"): "unnormalised mean corruption error = 1 - corruption/mean_accuracy, a fraction; it is NOT the AlexNet-normalised mCE.",
            self.key_pattern(NAME_ANY, "ce"): "CE(f, c) = sum_s E(f, s, c) / sum_s E(base, s, c) (Hendrycks & Dietterich 2019), a fraction.",
            self.key("mce"): "mCE = mean of CE over the 15 benchmark corruptions, a fraction (published figures are percentages: ResNet-50 76.7% = 0.767).",
            self.key_pattern(NAME_ANY, "relative_ce"): "relative CE = sum_s (E(f,s,c) - E_clean(f)) / sum_s (E(base,s,c) - E_clean(base)); E_clean(f) = 1 - corruption/clean/accuracy.",
            self.key("relative_mce"): "mean of relative CE over the 15 benchmark corruptions, a fraction.",
            self.key_pattern(NAME_ANY, SEVERITY_ANY, "ece"): f"expected calibration error of the max softmax probability, {p.ece_bins} equal-width bins (Guo et al. 2017), a fraction.",
            self.key("ece"): "ECE under corruption: mean over the corruptions of corruption/mean_accuracy of their mean per-severity ECE.",
            self.key("worst", "accuracy"): f"lowest per-corruption mean accuracy; this run: {worst}.",
            self.key("clean", "accuracy"): "top-1 accuracy on the same images uncorrupted (used for relative CE).",
        })
        if pre is not None:
            res.definitions[self.key("source")] = f"pre-rendered {pre.layout} files in {pre.root} (the benchmark authors' deterministic set)."
            res.notes.append(f"Images come from the pre-rendered {pre.layout} set {pre.root}; clean accuracy is measured on the run's data ({ctx.data.spec}).")
            return
        res.definitions[self.key("source")] = (
            f"rendered on the fly with the {p.backend} backend under protocol {self._protocol} ({self._protocol_rules()}), seeded per (run seed, corruption, severity, sample id); corrupted images are truncated to 8 bits (floor(255 y)) as the reference scripts save them."
        )
        shape = ctx.data.sample_shape() if len(ctx.data) else ()
        if self._protocol == "imagenet-c" and len(shape) == 3 and max(shape[1:]) < 64:
            res.notes.append("Small images were corrupted with the ImageNet-C (imagecorruptions) constants (protocol imagenet-c), not CIFAR-10-C's milder 32x32 re-parametrisation: accuracies are lower than and not comparable with published CIFAR-10-C numbers. Use protocol: cifar-c (32x32) or auto.")

    def _protocol_rules(self) -> str:
        return {
            "imagenet-c": "imagecorruptions constants at native size; per-pixel corruptions at native resolution; spatial ones on images with a side below 32 px upsampled by an integer factor and averaged back; grey images via RGB",
            "cifar-c": "make_cifar_c.py constants and procedures, as CIFAR-10-C / CIFAR-100-C were rendered; motion blur and snow with imagecorruptions' NumPy motion blur instead of ImageMagick",
            "cifar-c-small": "make_cifar_c.py constants; per-pixel corruptions at native resolution; spatial ones on a 32x32 canvas (integer blocks + reflect padding, cropped and averaged back) for sides <= 32, at native size otherwise",
        }.get(self._protocol, self._protocol)
