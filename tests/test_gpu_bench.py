"""bench/gpu.py runs end to end on the CPU with a tiny budget and prints JSON lines only."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "gpu.py"


@pytest.mark.timeout(1200)
def test_gpu_bench_quick_on_cpu():
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--device", "cpu"], capture_output=True, text=True, timeout=1100)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    tasks = {r["task"] for r in rows}
    assert {"resnet18_forward", "resnet18_input_gradient"} <= tasks
    errors = [r for r in rows if "error" in r]
    assert not errors, errors
    # every part contributed measurements with timings
    timed = [r for r in rows if "seconds" in r and r["task"] != "gpu_bench"]
    assert len(timed) >= 8
