"""bench/ood.py runs end to end with --quick and prints well-formed JSON lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "ood.py"


def test_bench_quick_runs() -> None:
    out = subprocess.run([sys.executable, str(BENCH), "--quick", "--detectors", "msp,energy,odin,mahalanobis"], capture_output=True, text=True, timeout=300, check=True)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    tasks = {r["task"]: r for r in rows}
    assert {"ood/forward", "ood/score/msp", "ood/score/energy", "ood/score/odin", "ood/score/mahalanobis", "ood/fit/mahalanobis"} <= set(tasks)
    for r in rows:
        assert {"task", "impl", "reference", "device", "n", "seconds", "ratio"} <= set(r)
        if r.get("reference_seconds"):  # ratio = robustlab's time over pytorch-ood's
            assert r["ratio"] == pytest.approx(r["seconds"] / r["reference_seconds"], rel=1e-6)
        if "forward_passes" in r and r["task"] != "ood/forward":  # cost in forward passes of the same data
            assert r["forward_passes"] == pytest.approx(r["seconds"] / tasks["ood/forward"]["seconds"], rel=1e-6)
    assert tasks["ood/fit/mahalanobis"]["fit_passes"] == 1.0  # one forward pass over the fit data
    if tasks["ood/score/energy"]["reference"] == "pytorch-ood":
        assert tasks["ood/score/energy"]["spearman_vs_reference"] > 0.999
