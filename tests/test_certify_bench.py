"""bench/certify.py runs end to end with --quick and prints well-formed JSON lines (timings are
never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "certify.py"


def test_bench_quick_runs() -> None:
    r = subprocess.run([sys.executable, str(BENCH), "--quick", "--device", "cpu", "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    assert {row["impl"] for row in rows} >= {"reference", "robustlab"}
    for row in rows:
        for key in ("task", "impl", "reference", "device", "n", "seconds", "ratio"):
            assert key in row, key
        assert row["task"] == "certify" and row["device"] == "cpu"
    ref = next(row for row in rows if row["impl"] == "reference")
    ours = next(row for row in rows if row["impl"] == "robustlab")
    # ratio = the reference's wall time over each implementation's (1 for the reference itself)
    assert ref["ratio"] == pytest.approx(1.0)
    assert ours["ratio"] == pytest.approx(ref["seconds"] / ours["seconds"], rel=0.02, abs=0.002)
    assert 0.0 <= ours["prediction_agreement"] <= 1.0 and ours["mean_abs_radius_diff"] >= 0.0


def test_adaptive_bench_quick_runs() -> None:
    bench = BENCH.parent / "certify_adaptive.py"
    r = subprocess.run([sys.executable, str(bench), "--quick", "--threads", "1"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    (row,) = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    for key in ("task", "impl", "reference", "device", "n", "seconds", "ratio", "samples_ratio", "same_within_interval"):
        assert key in row, key
    assert row["samples_fixed"] == row["n"] + row["n0"] and row["samples_adaptive"] <= row["samples_fixed"]
    assert row["samples_adaptive_max"] <= row["samples_fixed"]


def test_adaptive_bench_settle_wrong_reports_it_and_spends_no_more() -> None:
    bench = BENCH.parent / "certify_adaptive.py"
    rows = {}
    for flag in ([], ["--settle-wrong"]):
        r = subprocess.run([sys.executable, str(bench), "--quick", "--threads", "1", "--points", "12", *flag], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr
        (row,) = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
        rows[bool(flag)] = row
    assert rows[True]["settle_wrong"] is True and rows[False]["settle_wrong"] is False
    assert rows[True]["samples_adaptive"] <= rows[False]["samples_adaptive"]
    for key, v in rows[False].items():  # certified accuracy (of correct points) is the same either way
        if key.startswith("certified_accuracy@") and key.endswith("/adaptive"):
            assert rows[True][key] == v, key
