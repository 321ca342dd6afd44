"""bench/heap_threshold.py runs ``robustlab evaluate`` under each heap setting it names and reports what the
command set (issue 18: the 16 MB threshold with its trim threshold, against the 2 MB one before)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "heap_threshold.py"

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or not Path("/proc/self/status").exists(), reason="glibc and /proc only")


def test_heap_bench_compares_the_settings_end_to_end() -> None:
    from robustlab.memory import MMAP_THRESHOLD, TRIM_FACTOR, _thp_mode

    if _thp_mode() not in ("always", "madvise"):
        pytest.skip("without transparent huge pages the command leaves the threshold alone")
    out = subprocess.run([sys.executable, str(BENCH), "--model", "zoo:digits-cnn", "--data", "digits", "--n", "64", "--check", "clean", "--batch-size", "16",
                          "--threads", "1", "--settings", "2mb-trim128k", "default"], capture_output=True, text=True, timeout=600, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    by = {r["impl"]: r for r in rows if "heap" in r}
    old, new = by["robustlab evaluate (2mb-trim128k)"], by["robustlab evaluate (default)"]
    assert old["exit_code"] == new["exit_code"] == 0
    assert old["heap"]["mmap_threshold"] == 2 << 20 and old["heap"]["trim_threshold"] == 128 << 10
    assert new["heap"]["mmap_threshold"] == MMAP_THRESHOLD and new["heap"]["trim_threshold"] == TRIM_FACTOR * MMAP_THRESHOLD
    # the process's high-water mark after each stored batch: 64 points in batches of 16 are 4 batches, and a
    # high-water mark never falls
    after = new["peak_rss_mib_after_batch"]
    assert after and set(after) <= {"1", "2", "3", "4"}, new
    peaks = [after[k] for k in sorted(after, key=int)]
    assert peaks == sorted(peaks), new
    summary = rows[-1]
    assert summary["task"] == "heap/clean/summary" and "robustlab evaluate (default)" in summary
