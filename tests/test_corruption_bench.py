"""bench/corruptions.py runs end to end with --quick and prints well-formed JSON lines
(timings are not asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "corruptions.py"


@pytest.mark.timeout(300)
def test_bench_quick_json_lines() -> None:
    if not BENCH.is_file():
        pytest.skip("bench/corruptions.py not in this checkout")
    out = subprocess.run([sys.executable, str(BENCH), "--quick", "--device", "cpu", "--threads", "1"], capture_output=True, text=True, timeout=280, check=True)
    recs = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    for r in recs:
        assert {"task", "impl", "reference", "device", "n", "seconds", "ratio"} <= set(r)
        assert isinstance(r["seconds"], float)
    singles = [r for r in recs if r["task"].startswith("corrupt/")]
    assert {r["task"].split("/")[2] for r in singles} == {"32x32", "224x224"}
    for r in singles:
        assert r["ratio"] > 0 and r["reference_seconds"] > 0
        if r["deterministic"]:
            assert r["max_abs_diff_grey"] <= 1.0 + 1e-3  # fidelity figures are real measurements
    grid = [r for r in recs if r["task"].startswith("grid/")]
    assert len(grid) == 1 and grid[0]["images"] == grid[0]["n"] * 15
