"""Benchmark: peak memory batch by batch with and without robustlab's heap settings.

Runs ``robustlab evaluate`` (a fresh process per setting) with one check (default: AutoAttack
standard Linf at the data set's budget) and samples the process's VmHWM every 0.2 s together with
the number of batches stored, so the peak is known after each batch. Settings compared:

* ``default``: what a command does (glibc's mmap threshold fixed at 16 MB and its trim threshold at
  64 MB, PyTorch's huge-page allocations: ``robustlab.memory.bound_heap_growth``);
* ``glibc``: ``ROBUSTLAB_MMAP_THRESHOLD=0`` (glibc's dynamic threshold, the behaviour before);
* ``no-huge-pages``: the fixed threshold with ``THP_MEM_ALLOC_ENABLE=0``;
* ``2mb-trim128k``: the setting before 2026-12-03 (2 MB threshold, glibc's 128 KB trim threshold);
* ``2mb``, ``8mb``, ``16mb``, ``32mb``: other thresholds, each with a trim threshold 4x its size.

Prints one JSON line per setting (task, impl, reference, device, model, n, seconds, peak_rss_mib,
peak_rss_mib_after_batch) and a summary line. Linux only (/proc).

Example:
    python bench/heap_threshold.py --model zoo:cifar10-resnet18 --data npz:../shared/data/cifar10_test_1000.npz --n 1000
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SETTINGS = {
    "default": {},
    "glibc": {"ROBUSTLAB_MMAP_THRESHOLD": "0"},
    "no-huge-pages": {"THP_MEM_ALLOC_ENABLE": "0"},
    "2mb-trim128k": {"ROBUSTLAB_MMAP_THRESHOLD": str(2 << 20), "ROBUSTLAB_TRIM_THRESHOLD": str(128 << 10)},
    "2mb": {"ROBUSTLAB_MMAP_THRESHOLD": str(2 << 20)},
    "8mb": {"ROBUSTLAB_MMAP_THRESHOLD": str(8 << 20)},
    "16mb": {"ROBUSTLAB_MMAP_THRESHOLD": str(16 << 20)},
    "32mb": {"ROBUSTLAB_MMAP_THRESHOLD": str(32 << 20)},
}

SUITE = """name: heap-probe
description: one check, for bench/heap_threshold.py
checks:
  - check: {check}
"""


def _status(pid: int, key: str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _stored(out: Path) -> int:
    rows = 0
    for f in glob.glob(str(out / "results*.sqlite")):
        try:
            with sqlite3.connect(f) as con:
                rows += int(con.execute("select count(*) from results").fetchone()[0])
        except sqlite3.Error:
            pass
    return rows


def run(args: argparse.Namespace, name: str, suite: Path, work: Path) -> dict[str, Any]:
    out = work / name
    env = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_THRESHOLD_", "ROBUSTLAB_MMAP_THRESHOLD", "ROBUSTLAB_TRIM_THRESHOLD", "THP_MEM_ALLOC_ENABLE")}
    env.update(SETTINGS[name])
    cmd = [sys.executable, "-m", "robustlab", "evaluate", "--model", args.model, "--data", args.data, "--suite", str(suite), "--limit", str(args.n),
           "--out", str(out), "--no-mlflow", "--no-report", "--quiet", "--threads", str(args.threads), "--batch-size", str(args.batch_size)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    after: dict[int, float] = {}
    peak = 0.0
    while proc.poll() is None:
        hwm = _status(proc.pid, "VmHWM")
        if hwm is not None:
            peak = max(peak, hwm)
            after[_stored(out)] = peak
        time.sleep(0.2)
    err = proc.stderr.read() if proc.stderr else ""
    row: dict[str, Any] = {"task": f"heap/{args.check}", "impl": f"robustlab evaluate ({name})", "reference": "glibc's dynamic mmap threshold", "device": "cpu",
                           "model": args.model, "n": args.n, "batch_size": args.batch_size, "threads": args.threads, "setting": SETTINGS[name],
                           "seconds": round(time.perf_counter() - t0, 2), "exit_code": proc.returncode}
    card = out / "scorecard.json"
    if card.is_file():
        mem = json.loads(card.read_text())["environment"]["memory"]
        row.update(peak_rss_mib=mem["peak_rss_mib"], heap=mem.get("heap"))
    row["peak_rss_mib_after_batch"] = {str(k): round(v, 1) for k, v in sorted(after.items()) if k > 0}
    if proc.returncode != 0:
        row["error"] = err.strip().splitlines()[-1:] or "failed"
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="zoo:cifar10-resnet18")
    ap.add_argument("--data", default="npz:../shared/data/cifar10_test_1000.npz")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--check", default="autoattack")
    ap.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    if not Path("/proc/self/status").exists():
        sys.exit("bench/heap_threshold.py needs Linux /proc")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        suite = work / "suite.yaml"
        suite.write_text(SUITE.format(check=args.check))
        rows = [run(args, name, suite, work) for name in args.settings]
    for r in rows:
        print(json.dumps(r), flush=True)
    by = {r["impl"]: r for r in rows}
    summary: dict[str, Any] = {"task": f"heap/{args.check}/summary", "impl": "robustlab evaluate", "reference": "glibc's dynamic mmap threshold", "device": "cpu", "n": args.n}
    for r in rows:
        b = r["peak_rss_mib_after_batch"]
        if b:
            first, last = list(b.values())[0], list(b.values())[-1]
            summary[r["impl"]] = {"peak_after_first_batch_mib": first, "peak_mib": last, "rise_mib": round(last - first, 1), "seconds": r["seconds"]}
    if "robustlab evaluate (default)" in by and "robustlab evaluate (glibc)" in by:
        summary["time_ratio_default_over_glibc"] = round(by["robustlab evaluate (default)"]["seconds"] / by["robustlab evaluate (glibc)"]["seconds"], 3)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
