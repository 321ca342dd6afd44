"""bench/cpu_dtypes.py runs end to end and prints one JSON line per arithmetic, pass and batch size."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "cpu_dtypes.py"


def test_cpu_dtypes_bench_times_every_arithmetic_against_fp32() -> None:
    out = subprocess.run([sys.executable, str(BENCH), "--model", "zoo:digits-cnn", "--rows", "1", "3", "--calls", "1", "--reps", "1", "--threads", "1"],
                         capture_output=True, text=True, timeout=300, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    from robustlab.fastpaths import cpu_native_bf16

    seen = {(r["impl"], r["task"], r["rows"]) for r in rows}
    assert seen == {(a, f"cpu_dtypes/{k}", n) for a in ("fp32", "bf16-autocast", "bf16-weights", "fp16-weights")
                    for k in ("forward", "input_gradient") for n in (1, 3)}
    for r in rows:
        assert r["cpu_native_bf16"] is cpu_native_bf16() and r["threads"] == 1
        fp32 = next(f for f in rows if f["impl"] == "fp32" and f["task"] == r["task"] and f["rows"] == r["rows"])
        # the ratio is this arithmetic's cost over fp32's at the same pass and batch; the times are printed to
        # 0.001 ms and the ratio to 0.001: allow exactly that rounding
        ratio = r["ms_per_row"] / fp32["ms_per_row"]
        rounding = 0.0005 + ratio * 0.0005 * (1 / r["ms_per_row"] + 1 / fp32["ms_per_row"]) + 1e-9
        assert abs(r["ratio_to_fp32"] - ratio) <= rounding
