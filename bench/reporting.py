"""Benchmark: robustlab's scorecard tracking, gates and report against named references, same run.

Tasks (one JSON line each: task, impl, reference, device, n, seconds, ratio = reference seconds /
robustlab seconds, plus fidelity figures):

* ``mlflow_log``: :func:`robustlab.tracking.log_scorecard` (sanitised keys, ``log_batch``, artifacts)
  against the MLflow fluent API pattern of the MLflow docs (``mlflow.start_run`` + one
  ``mlflow.log_metric`` per metric, ``mlflow.log_artifact`` for the scorecard), both into one local
  SQLite store. Fidelity: every metric read back equals the scorecard's value.
* ``mcnemar``: :func:`robustlab.gates.mcnemar.exact_mcnemar` against statsmodels'
  ``mcnemar(exact=True)`` when installed, else against the same exact formula written with
  ``scipy.stats.binom.cdf`` (what statsmodels computes). Fidelity: max |p difference|.
* ``report_plots``: the report's inline SVG plots against matplotlib's SVG backend for the same
  series (when matplotlib is installed). Fidelity: number of plots drawn.

Examples:
    python bench/reporting.py --quick
    python bench/reporting.py --metrics 2000 --pairs 2000
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from robustlab.metric_keys import class_segment, eps_segment, key  # noqa: E402
from robustlab.stats import wilson_interval  # noqa: E402
from robustlab.scorecard import CheckResult, Scorecard, Series  # noqa: E402


def synthetic_card(n_metrics: int, n: int = 1000, seed: int = 0) -> Scorecard:
    """A scorecard with ``n_metrics`` adversarial-style metrics and a few series (numbers are random)."""
    rng = np.random.default_rng(seed)
    c = CheckResult(id="pgd", check="pgd")
    for i in range(n_metrics):
        k = int(rng.integers(0, n + 1))
        c.add_metric(key("adversarial", "pgd", eps_segment(0.001 * (i + 1)), class_segment(i % 10), "robust_accuracy"), k / n, interval=wilson_interval(k, n), n=n)
    eps = [0.5 * i / 255 for i in range(1, 17)]
    c.series["robust_accuracy_vs_eps"] = Series(x=eps, y={"pgd": sorted(rng.random(16).tolist(), reverse=True)}, x_label="epsilon", y_label="robust accuracy")
    rows = [f"corruption_{i}" for i in range(15)]
    c.series["grid"] = Series(x=[1, 2, 3, 4, 5], y={r: rng.random(5).tolist() for r in rows}, rows=rows, x_label="severity", y_label="accuracy", kind="grid")
    c.per_sample["robust/eps_0.03137"] = (rng.random(n) < 0.4).tolist()
    return Scorecard(tool={"name": "robustlab", "version": "bench"}, model={"spec": "bench", "sha256": "0" * 64},
                     data={"spec": "bench", "n": n, "ids": [str(i) for i in range(n)]}, suite={"name": "bench"},
                     environment={}, run={"seed": seed}, checks=[c])


def emit(**kw: Any) -> None:
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


def bench_mlflow(n_metrics: int, device: str) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    from robustlab.tracking import log_scorecard

    card = synthetic_card(n_metrics)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        uri = f"sqlite:///{out / 'mlflow.db'}"
        client = MlflowClient(tracking_uri=uri)
        client.create_experiment("warmup", artifact_location=(out / "art-w").as_uri())  # creates the schema once
        t0 = time.perf_counter()
        run_id = log_scorecard(card, out_dir=out, uri=uri, experiment="ours")
        ours = time.perf_counter() - t0

        card_path = card.write(out / "scorecard.json")
        mlflow.set_tracking_uri(uri)
        exp = client.create_experiment("reference", artifact_location=(out / "art-r").as_uri())
        t0 = time.perf_counter()
        with mlflow.start_run(experiment_id=exp) as run:
            for k, v in card.metrics().items():
                mlflow.log_metric(k, v)  # the scorecard key is the MLflow name (no mapping)
            mlflow.log_artifact(str(card_path))
        ref = time.perf_counter() - t0
        got = client.get_run(run_id).data.metrics
        err = max(abs(got[k] - v) for k, v in card.metrics().items())
        ref_got = client.get_run(run.info.run_id).data.metrics
    emit(task="mlflow_log", impl="robustlab.tracking.log_scorecard", reference="mlflow fluent log_metric per metric", device=device,
         n=n_metrics, seconds=round(ours, 4), reference_seconds=round(ref, 4), ratio=round(ref / ours, 3),
         max_abs_metric_error=err, metrics_logged=len(got), reference_metrics_logged=len(ref_got))


def bench_mcnemar(pairs: int, device: str) -> None:
    from scipy.stats import binom

    from robustlab.gates.mcnemar import exact_mcnemar

    rng = np.random.default_rng(0)
    cases = [(int(a), int(b)) for a, b in rng.integers(0, 400, size=(pairs, 2))]
    try:
        from statsmodels.stats.contingency_tables import mcnemar

        def ref(b: int, c: int) -> float:
            return float(mcnemar([[0, b], [c, 0]], exact=True).pvalue)

        ref_name = "statsmodels mcnemar(exact=True)"
    except ImportError:
        def ref(b: int, c: int) -> float:
            return 1.0 if b + c == 0 else float(min(1.0, 2 * binom.cdf(min(b, c), b + c, 0.5)))

        ref_name = "exact binomial formula via scipy.stats.binom.cdf (statsmodels not installed)"
    t0 = time.perf_counter()
    ours = [exact_mcnemar(b, c)[1] for b, c in cases]
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    theirs = [ref(b, c) for b, c in cases]
    t_ref = time.perf_counter() - t0
    err = max(abs(a - b) for a, b in zip(ours, theirs))
    emit(task="mcnemar", impl="robustlab.gates.mcnemar.exact_mcnemar", reference=ref_name, device=device, n=pairs,
         seconds=round(t_ours, 4), reference_seconds=round(t_ref, 4), ratio=round(t_ref / t_ours, 3), max_abs_p_difference=err)


def bench_plots(repeats: int, device: str) -> None:
    from robustlab.report.svg import render_series

    card = synthetic_card(10)
    series = list(card.checks[0].series.values())
    t0 = time.perf_counter()
    ours = [render_series(s) for _ in range(repeats) for s in series]
    t_ours = time.perf_counter() - t0
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        emit(task="report_plots", impl="robustlab.report.svg", reference="matplotlib (not installed)", device=device, n=repeats,
             seconds=round(t_ours, 4), ratio=math.nan, plots=len(ours))
        return

    def mpl(s: Series) -> str:
        fig, ax = plt.subplots(figsize=(6, 3))
        if s.kind == "grid":
            ax.imshow(np.array([s.y[r] for r in (s.rows or list(s.y))], dtype=float), cmap="Blues")
        else:
            for name, ys in s.y.items():
                ax.plot(s.x, [math.nan if v is None else v for v in ys], marker="o", label=name)
            ax.legend()
        buf = io.StringIO()
        fig.savefig(buf, format="svg")
        plt.close(fig)
        return buf.getvalue()

    t0 = time.perf_counter()
    theirs = [mpl(s) for _ in range(repeats) for s in series]
    t_ref = time.perf_counter() - t0
    emit(task="report_plots", impl="robustlab.report.svg", reference="matplotlib SVG backend", device=device, n=repeats * len(series),
         seconds=round(t_ours, 4), reference_seconds=round(t_ref, 4), ratio=round(t_ref / t_ours, 3), plots=len(ours),
         reference_plots=len(theirs), mean_svg_kb=round(sum(map(len, ours)) / len(ours) / 1024, 1),
         reference_mean_svg_kb=round(sum(map(len, theirs)) / len(theirs) / 1024, 1))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny budgets (used by the test suite)")
    ap.add_argument("--device", default="cpu", help="recorded only: everything here runs on the CPU")
    ap.add_argument("--metrics", type=int, default=500)
    ap.add_argument("--pairs", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--skip-mlflow", action="store_true")
    a = ap.parse_args(argv)
    if a.quick:
        a.metrics, a.pairs, a.repeats = 50, 100, 2
    bench_mcnemar(a.pairs, a.device)
    bench_plots(a.repeats, a.device)
    if not a.skip_mlflow:
        bench_mlflow(a.metrics, a.device)


if __name__ == "__main__":
    main()
