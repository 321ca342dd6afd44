"""The ``clean`` check: accuracy, calibration and confusion on unperturbed data."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..errors import SuiteError
from ..metric_keys import class_segment, key
from ..stats import confusion_matrix, expected_calibration_error, reliability_bins, wilson_interval
from ..scorecard import CheckResult, Series
from .base import CHECKS, Check, Params, RunContext


@dataclass(frozen=True)
class CleanParams(Params):
    ece_bins: int = 15
    per_sample: bool = True

    def validate(self) -> None:
        if not 2 <= self.ece_bins <= 1000:
            raise SuiteError(f"clean.ece_bins must be between 2 and 1000, got {self.ece_bins}.")


@CHECKS.register("clean")
class CleanCheck(Check[CleanParams]):
    """Top-1 accuracy with a 95% Wilson interval, per-class accuracy, confusion matrix, expected
    calibration error (equal-width bins) and mean confidence.

    Shapes: logits (N, K) from ``model(x)`` on the evaluation data in ``model.bounds``.
    References: Guo et al. 2017 (ECE); Wilson 1927 (interval). ECE checked against the definition in
    ``robustlab.stats``; accuracy against a plain PyTorch loop (tests).
    """

    name = "clean"
    family = "clean"
    description = "Clean accuracy (95% CI), per-class accuracy, confusion matrix, ECE, mean confidence."
    Params = CleanParams

    def run(self, ctx: RunContext) -> CheckResult:
        p: CleanParams = self.params
        res = self.new_result()
        model, data = ctx.model, ctx.data
        scope = ctx.store.scope(self.id, {"check": self.name, **res.params})

        def batch(start: int, stop: int) -> dict[str, list[float]]:
            x = data.images(slice(start, stop)).to(ctx.device)
            with torch.no_grad():
                logits = model(x)
            model.check_output(logits, x.shape[0])
            # the prediction is the logits' argmax: a float32 softmax of near-tied logits rounds to ties (all 1/K
            # for logits of ~1e-9, e.g. an untrained MobileNetV3), whose argmax would be class 0
            conf, pred = torch.softmax(logits.float(), dim=1).amax(dim=1), logits.argmax(dim=1)
            return {"pred": pred.cpu().tolist(), "conf": conf.cpu().tolist()}

        parts = ctx.map_batches(scope, len(data), batch, desc="clean")
        preds = [np.asarray(b["pred"], dtype=np.int64) for b in parts]
        confs = [np.asarray(b["conf"], dtype=np.float64) for b in parts]
        pred = np.concatenate(preds)
        conf = np.concatenate(confs)
        y = data.y.numpy()
        correct = pred == y
        n, k = len(y), int(correct.sum())
        res.add_metric("clean/accuracy", k / n, interval=wilson_interval(k, n), n=n)
        res.add_metric("clean/error", 1 - k / n, n=n)
        res.add_metric("clean/ece", expected_calibration_error(conf, correct, n_bins=p.ece_bins), n=n)
        res.add_metric("clean/mean_confidence", float(conf.mean()), n=n)
        names = model.class_names
        per_class: list[float | None] = []
        for c in range(model.num_classes):
            m = y == c
            if m.any():
                acc = float(correct[m].mean())
                per_class.append(acc)
                res.add_metric(key("clean", class_segment(c), "accuracy"), acc, interval=wilson_interval(int(correct[m].sum()), int(m.sum())), n=int(m.sum()))
            else:
                per_class.append(None)
        present = [a for a in per_class if a is not None]
        if present:
            res.add_metric("clean/worst_class_accuracy", min(present), n=n)
        cm = confusion_matrix(y, pred, model.num_classes)
        if model.num_classes <= 100:
            res.series["confusion"] = Series(x=names, rows=names, y={names[i]: [float(v) for v in cm[i]] for i in range(len(names))}, x_label="predicted", y_label="true", kind="grid")
        res.series["per_class_accuracy"] = Series(x=names, y={"accuracy": per_class}, x_label="class", y_label="accuracy", kind="bar")
        rb = reliability_bins(conf, correct, n_bins=p.ece_bins)
        res.series["reliability"] = Series(x=[(i + 0.5) / p.ece_bins for i in range(p.ece_bins)], y={"accuracy": rb["accuracy"], "confidence": rb["confidence"]}, x_label="confidence", y_label="accuracy", kind="line")
        if p.per_sample:
            res.per_sample["correct"] = correct.tolist()
            res.per_sample["prediction"] = pred.tolist()
            res.per_sample["confidence"] = [round(float(c), 6) for c in conf]
        res.definitions.update({
            "clean/accuracy": "top-1 accuracy on all n evaluated points; 95% Wilson score interval.",
            "clean/ece": f"expected calibration error: sum over {p.ece_bins} equal-width confidence bins of |B|/n * |accuracy(B) - mean confidence(B)| (Guo et al. 2017), a fraction.",
            "clean/mean_confidence": "mean of the maximum softmax probability.",
            "clean/worst_class_accuracy": "lowest per-class top-1 accuracy.",
        })
        return res
