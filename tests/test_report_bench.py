"""Runs bench/reporting.py --quick end to end and checks its JSON lines (never its timings)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "reporting.py"


@pytest.mark.skipif(not BENCH.is_file(), reason="bench/reporting.py not in this checkout")
def test_reporting_bench_quick(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    res = subprocess.run([sys.executable, str(BENCH), "--quick", "--device", "cpu"], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = [json.loads(ln) for ln in res.stdout.splitlines() if ln.startswith("{")]
    tasks = {ln["task"]: ln for ln in lines}
    assert {"mcnemar", "report_plots", "mlflow_log"} <= set(tasks)
    for ln in lines:
        assert {"task", "impl", "reference", "device", "n", "seconds", "ratio"} <= set(ln) and ln["device"] == "cpu"
    assert tasks["mcnemar"]["max_abs_p_difference"] < 1e-9
    assert tasks["mlflow_log"]["max_abs_metric_error"] == 0.0 and tasks["mlflow_log"]["metrics_logged"] == tasks["mlflow_log"]["n"]
    assert tasks["report_plots"]["plots"] == tasks["report_plots"]["n"]
