"""bench/defend.py runs end to end with --quick and prints well-formed JSON lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "defend.py"


def test_defend_bench_quick() -> None:
    r = subprocess.run([sys.executable, str(BENCH), "--quick", "--cifar", "/nonexistent"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    assert {row["task"] for row in rows} == {"fast-at/digits", "augmix/digits"}
    for row in rows:
        for k in ("task", "impl", "reference", "device", "n", "seconds", "ratio"):
            assert k in row
        assert row["ratio"] == pytest.approx(row["reference_seconds"] / row["seconds"], rel=0.02, abs=0.002)
    aug = next(row for row in rows if row["task"] == "augmix/digits")
    assert 0 < aug["mean_abs_change"] < 0.5 and 0 < aug["reference_mean_abs_change"] < 0.5
