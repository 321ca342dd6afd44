"""bench/scale.py runs end to end with --quick and prints well-formed JSON lines (timings never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "scale.py"


@pytest.mark.slow
def test_scale_bench_quick_runs() -> None:
    r = subprocess.run([sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    sizes = [row for row in rows if not row["task"].endswith("/growth")]
    assert [row["n"] for row in sizes] == [16, 48]
    for row in sizes:
        assert "error" not in row, row
        assert row["peak_rss_mib"] > 0 and row["scorecard_bytes"] > 0
    (growth,) = [row for row in rows if row["task"].endswith("/growth")]
    assert {"time_growth_over_n_growth", "peak_memory_ratio", "scorecard_bytes_per_image"} <= set(growth)
