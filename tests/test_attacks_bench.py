"""bench/attacks.py runs end to end (``--quick``) and prints one JSON line per measurement."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "attacks.py"


def test_bench_quick_prints_json_lines() -> None:
    out = subprocess.run([sys.executable, str(BENCH), "--quick", "--device", "cpu", "--threads", "1"], capture_output=True, text=True, timeout=300, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    tasks = {r["task"] for r in rows}
    assert {"autoattack/digits-cnn/linf=0.1", "malt/digits-cnn/linf=0.1", "pgd/digits-cnn/linf=0.1"} <= tasks
    malt = next(r for r in rows if r["task"].startswith("malt/"))
    assert 0 <= malt["autoattack_breaks_malt_misses"] <= malt["n"]
    for r in rows:
        assert {"task", "impl", "reference", "device", "n", "seconds", "ratio", "robust_accuracy", "reference_robust_accuracy"} <= set(r)
        assert r["seconds"] > 0 and r["ratio"] > 0
        assert isinstance(r["robust_accuracy"], float)
