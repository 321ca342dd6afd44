"""bench/attacks.py runs end to end (``--quick``) and prints one JSON line per measurement."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "attacks.py"


def test_bench_quick_prints_json_lines() -> None:
    out = subprocess.run([sys.executable, str(BENCH), "--quick", "--device", "cpu", "--threads", "1", "--precisions", "fp32", "bf16"], capture_output=True, text=True, timeout=300, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    tasks = {r["task"] for r in rows}
    assert {"autoattack/digits-cnn/linf=0.1", "malt/digits-cnn/linf=0.1", "pgd/digits-cnn/linf=0.1"} <= tasks
    aa = next(r for r in rows if r["task"].startswith("autoattack/"))
    assert aa["precision"] == "fp32"
    # the bf16 line (`evaluate --precision bf16`): same points, verdicts in fp32, compared with the fp32 run before it
    bf = [r for r in rows if r.get("precision") == "bf16"]
    assert len(bf) == 1 and bf[0]["task"] == aa["task"] and bf[0]["fp32_seconds"] == aa["seconds"]
    from robustlab.fastpaths import cpu_native_bf16

    assert bf[0]["cpu_native_bf16"] is cpu_native_bf16()
    # clean flags come from the fp32 model whatever the attacks iterate on
    assert bf[0]["clean_accuracy"] == aa["clean_accuracy"]
    # the robust counts differ by the points that changed one way minus those that changed the other: at most
    # the disagreements, and of the same parity
    moved, disagree = round(abs(bf[0]["robust_accuracy"] - aa["robust_accuracy"]) * bf[0]["n"]), bf[0]["flag_disagreements_with_fp32"]
    assert moved <= disagree <= bf[0]["n"] and (disagree - moved) % 2 == 0
    assert bf[0]["speedup_over_fp32"] == pytest.approx(aa["seconds"] / bf[0]["seconds"], abs=0.005 + 0.001 * bf[0]["speedup_over_fp32"] / bf[0]["seconds"])
    from robustlab.memory import _thp_mode

    if sys.platform.startswith("linux") and _thp_mode() in ("always", "madvise"):  # both engines ran under the command's C heap
        from robustlab.memory import MMAP_THRESHOLD, TRIM_FACTOR

        assert aa["heap"]["mmap_threshold"] == MMAP_THRESHOLD and aa["heap"]["trim_threshold"] == TRIM_FACTOR * MMAP_THRESHOLD, aa["heap"]
    malt = next(r for r in rows if r["task"].startswith("malt/"))
    assert 0 <= malt["autoattack_breaks_malt_misses"] <= malt["n"]
    # MALT's robust accuracy is consistent with its per-point differences from AutoAttack
    assert malt["robust_accuracy"] - malt["autoattack_robust_accuracy"] == pytest.approx(
        (malt["autoattack_breaks_malt_misses"] - malt["malt_breaks_autoattack_misses"]) / malt["n"], abs=1e-9)
    for r in rows:
        assert {"task", "impl", "reference", "device", "n", "seconds", "ratio", "robust_accuracy", "reference_robust_accuracy"} <= set(r)
        if r is malt:  # MALT is not a re-implementation of its reference: it may legitimately differ
            continue
        # the ratio is the reference's time over ours, and the fidelity figures are real comparisons
        # (both times are printed to 1 ms and the ratio to 0.01: allow exactly that rounding)
        rounding = 0.005 + r["ratio"] * 0.0005 * (1 / r["seconds"] + 1 / r["reference_seconds"]) + 1e-9
        assert abs(r["ratio"] - r["reference_seconds"] / r["seconds"]) <= rounding
        assert 0.0 <= r["robust_accuracy"] <= 1.0 and 0.0 <= r["reference_robust_accuracy"] <= 1.0
        assert r["robust_accuracy_diff"] == pytest.approx(r["robust_accuracy"] - r["reference_robust_accuracy"], abs=1e-12)
        if r.get("precision") == "bf16":  # bf16 searches differently: only the fp32 engine is held to the reference's flags
            continue
        assert abs(r["robust_accuracy_diff"]) <= 2 / r["n"] + 1e-12
    aa = next(r for r in rows if r["task"].startswith("autoattack/"))
    # same seed, data and batch: the flags agree up to Square's batch dependence (at most one point here)
    assert aa["flag_disagreements"] <= 1 and abs(aa["robust_accuracy_diff"]) <= aa["flag_disagreements"] / aa["n"] + 1e-12
