"""robustlab's uncertainty numbers against independent references (numpy written from
../shared/REFERENCES.md, and scikit-learn where it has the metric), careless inputs, and the
side-by-side comparison of compressed variants."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from robustlab.scorecard import CheckResult, Scorecard
from robustlab.uncertainty import protocol as U


def _softmax(z: np.ndarray, t: float = 1.0) -> np.ndarray:
    a = z / t
    e = np.exp(a - a.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _ece(conf: np.ndarray, ok: np.ndarray, bins: int = 15) -> float:
    b = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)  # bins (lo, hi], the first one with 0
    return float(sum((b == i).mean() * abs(ok[b == i].mean() - conf[b == i].mean()) for i in range(bins) if (b == i).any()))


def test_clean_metrics_match_sklearn_and_the_definitions() -> None:
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

    rng = np.random.default_rng(0)
    k, n = 10, 400
    y = rng.integers(0, k, n)
    z = rng.normal(size=(n, k)) * 2
    z[np.arange(n), y] += rng.normal(2.0, 1.5, n)  # about 70% right, no tied confidences
    yv = rng.integers(0, k, 200)
    zv = rng.normal(size=(200, k)) * 2
    zv[np.arange(200), yv] += rng.normal(2.0, 1.5, 200)
    s = U.Settings(scores=("msp",), n_boot=0)
    fitted = U.fit(zv, yv, s, rng=np.random.default_rng(1))
    got = {(*r.head, r.metric): r.value for r in U.measure(z, y, fitted, s, scores=("msp",), rng=np.random.default_rng(2))}
    p = _softmax(z)
    conf, ok = p.max(1), p.argmax(1) == y
    assert got[("failure", "msp", "auroc")] == pytest.approx(roc_auc_score(ok, conf), abs=1e-12)
    assert got[("failure", "msp", "aupr_error")] == pytest.approx(average_precision_score(~ok, -conf), abs=1e-12)
    err = (~ok[np.argsort(-conf)]).astype(float)
    aurc = float(np.mean(np.cumsum(err) / np.arange(1, n + 1)))
    e = int((~ok).sum())
    oracle = float(np.mean(np.maximum(0, np.arange(1, n + 1) - (n - e)) / np.arange(1, n + 1)))
    assert got[("selective", "msp", "aurc")] == pytest.approx(aurc, abs=1e-12)
    assert got[("selective", "msp", "eaurc")] == pytest.approx(aurc - oracle, abs=1e-12)
    assert got[("calibration", "raw", "ece")] == pytest.approx(_ece(conf, ok), abs=1e-12)
    assert got[("calibration", "raw", "classwise_ece")] == pytest.approx(np.mean([_ece(p[:, c], (y == c).astype(float)) for c in range(k)]), abs=1e-12)
    assert got[("calibration", "raw", "nll")] == pytest.approx(log_loss(y, p, labels=list(range(k))), abs=1e-12)
    assert got[("calibration", "raw", "brier")] == pytest.approx(brier_score_loss(y, p, labels=list(range(k))), abs=1e-12)
    pt = _softmax(z, fitted.temperature)
    assert got[("calibration", "ts", "nll")] == pytest.approx(log_loss(y, pt, labels=list(range(k))), abs=1e-12)


def test_conformal_alpha_001_on_50_calibration_points_gives_every_label() -> None:
    from robustlab.uncertainty import conformal as cp

    scores = np.random.default_rng(0).random(50)
    assert math.isinf(cp.conformal_quantile(scores, 0.01))  # ceil(51 * 0.99) = 51 > 50
    assert cp.conformal_quantile(scores, 0.1) == np.sort(scores)[45]  # ceil(51 * 0.9) = 46th smallest


def _card(per_sample: dict[str, list[object]]) -> Scorecard:
    n = len(next(iter(per_sample.values())))
    c = CheckResult(id="uncertainty", check="uncertainty")
    c.per_sample.update(per_sample)
    return Scorecard(tool={"name": "robustlab"}, model={}, data={"ids": [f"d/{i}" for i in range(n)], "n": n}, suite={}, environment={}, run={}, checks=[c])


def test_variant_comparison_runs_mcnemar_only_on_true_false_flags(tmp_path: Path) -> None:
    """A conformal set size that is 0 or 1 everywhere is a count, not a correct/wrong flag: pairing it
    with McNemar reported "lost" samples (a set of size 1 that became empty) as regressions."""
    from robustlab.pipelines.variants import VariantRun, comparison

    base = _card({"uncertainty/correct": [True, True, False, True], "uncertainty/conformal/lac/0.9/set_size": [1, 1, 0, 1]})
    var = _card({"uncertainty/correct": [True, False, False, True], "uncertainty/conformal/lac/0.9/set_size": [1, 0, 0, 0]})
    out = comparison(VariantRun("base", "b", tmp_path / "base", base), [VariantRun("v", "v", tmp_path / "v", var)], {"base": {}, "v": {}})
    flags = {f["flags"]: (f["lost"], f["gained"]) for f in out["variants"][0]["mcnemar_vs_base"]}
    assert flags == {"uncertainty/uncertainty/correct": (1, 0)}


def test_compare_pairs_only_true_false_flags_not_a_two_class_models_predictions() -> None:
    """A 2-class model's predicted classes are all 0 or 1, and so are small counts: `compare` and McNemar
    gate rules paired them as if they were correct/incorrect flags ('lost' meaning a smaller class index)."""
    import json
    from pathlib import Path

    from robustlab.gates.compare import compare_scorecards
    from robustlab.gates.mcnemar import is_flag_list
    from robustlab.scorecard import Scorecard

    raw = json.loads((Path(__file__).parent / "golden" / "quick.json").read_text())
    a, b = Scorecard.from_dict(json.loads(json.dumps(raw))), Scorecard.from_dict(json.loads(json.dumps(raw)))
    ca, cb = a.check("clean"), b.check("clean")
    assert ca is not None and cb is not None
    n = len(ca.per_sample["correct"])
    ca.per_sample["prediction"] = [i % 2 for i in range(n)]
    cb.per_sample["prediction"] = [(i + 1) % 2 for i in range(n)]
    names = [f.name for f in compare_scorecards(a, b).flags]
    assert "clean/correct" in names and "clean/prediction" not in names, names
    assert not is_flag_list([0, 1, 1, 0]) and is_flag_list([True, None, False]) and not is_flag_list([None])
