"""bench/gpu.py runs end to end on the CPU with a tiny budget and prints JSON lines only."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "gpu.py"


@pytest.mark.timeout(600)
def test_gpu_bench_quick_on_cpu():
    """The orchestrator: the throughput ceiling, one sub-bench passed through, the CPU skip of the robust
    AutoAttack, and only the parts asked for. (Each sub-bench's own --quick run is tested in its file:
    test_attacks_bench, test_corruption_bench, test_ood_bench, test_certify_bench.)"""
    proc = subprocess.run([sys.executable, str(BENCH), "--quick", "--device", "cpu", "--parts", "throughput,ood,attacks_robust"], capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    tasks = {r["task"] for r in rows}
    assert {"resnet18_forward", "resnet18_input_gradient", "ood/forward", "attacks_robust"} <= tasks
    assert not any(t.startswith(("attacks/", "corruption", "certify")) for t in tasks), tasks
    errors = [r for r in rows if "error" in r]
    assert not errors, errors
    throughput = [r for r in rows if r["task"].startswith("resnet18_")]
    for r in throughput:
        assert r["images_per_second"] == pytest.approx(r["n"] / r["seconds"], rel=0.01)
    assert next(r for r in rows if r["task"] == "attacks_robust")["skipped"]
    assert rows[0]["task"] == rows[-1]["task"] == "gpu_bench" and "finished" in rows[-1]
