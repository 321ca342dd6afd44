"""bench/autoattack_split.py runs end to end (``--quick``): per-member seconds of both engines, their ratio, same flags."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "autoattack_split.py"


def test_split_bench_quick_prints_both_engines_and_the_ratio() -> None:
    out = subprocess.run([sys.executable, str(BENCH), "--quick", "--model", "zoo:digits-cnn", "--data", "digits", "--eps", "0.1", "--n", "12",
                          "--threads", "1"], capture_output=True, text=True, timeout=300, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    fast, ref, ratio = rows
    assert (fast["engine"], ref["engine"]) == ("fast", "reference")
    for r in (fast, ref):
        assert set(r["seconds_per_attack"]) == set(r["robust_after"]) == {"apgd-ce", "apgd-t", "fab-t", "square"}
        assert sum(r["seconds_per_attack"].values()) <= r["seconds"] + 0.05
        after = list(r["robust_after"].values())
        assert after == sorted(after, reverse=True) and after[0] <= r["clean_correct"] <= r["n"] == 12
    # the printed seconds are rounded to 0.01 s and the ratio (of the unrounded times) to 0.01: allow exactly that error
    r = ref["seconds"] / fast["seconds"]
    assert abs(ratio["ratio"] - r) <= r * (0.005 / fast["seconds"] + 0.005 / ref["seconds"]) + 0.005 + 1e-9, (ratio, fast["seconds"], ref["seconds"])
    assert ratio["flag_disagreements"] <= 1  # Square's documented batch dependence at most
