"""Benchmark: how time, peak memory and scorecard size grow with the number of images.

Runs ``robustlab evaluate`` once per size n (a fresh process each, so peak memory is that run's
own: ``wait4``'s ``ru_maxrss``) and prints one JSON line per size (task, impl, reference, device,
n, seconds, seconds_per_image, peak_rss_mib, scorecard_bytes, scorecard_bytes_per_image) and a
final line with the growth: time ratio / n ratio between the largest and smallest size (1 = linear),
peak memory ratio (1 = flat) and scorecard bytes per image at both ends.

Examples:
    python bench/scale.py --quick
    python bench/scale.py --model zoo:digits-cnn --data digits --sizes 360 1797 --suite standard
    python bench/scale.py --model zoo:cifar10-resnet18 --data npz:../shared/data/cifar10_test_1000.npz --sizes 200 1000
    python bench/scale.py --model zoo:cifar10-resnet18 --data npz:../shared/data/cifar10_9000_jpeg.npz --sizes 9000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def run_one(args: argparse.Namespace, n: int, out: Path) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "robustlab", "evaluate", "--model", args.model, "--suite", args.suite, "--limit", str(n), "--out", str(out),
           "--no-mlflow", "--no-report", "--device", args.device, "--threads", str(args.threads), "--batch-size", str(args.batch_size)]
    if args.data:
        cmd += ["--data", args.data]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    sec = time.perf_counter() - t0
    err = proc.stderr.read() if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    card = out / "scorecard.json"
    row: dict[str, Any] = {"task": f"scale/{args.suite}", "impl": "robustlab evaluate", "reference": "linear time, flat memory", "device": args.device,
                           "model": args.model, "data": args.data, "n": n, "seconds": round(sec, 2), "seconds_per_image": round(sec / n, 4),
                           "peak_rss_mib": round(usage.ru_maxrss / 1024, 1), "exit_code": code}
    if card.is_file():
        size = card.stat().st_size
        row.update(scorecard_bytes=size, scorecard_bytes_per_image=round(size / n, 1))
    if code not in (0, 1, 3):
        row["error"] = (err.strip().splitlines() or ["failed"])[-1][:300]
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="zoo:digits-cnn")
    ap.add_argument("--data", default=None)
    ap.add_argument("--suite", default="standard")
    ap.add_argument("--sizes", type=int, nargs="+", default=[360, 1797])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--quick", action="store_true", help="quick suite, 16 and 48 digits images (for the test)")
    args = ap.parse_args()
    if args.quick:
        args.suite, args.sizes, args.threads = "quick", [16, 48], 1
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="robustlab-scale-"))
    try:
        for n in sorted(args.sizes):
            row = run_one(args, n, tmp / f"n{n}")
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    ok = [r for r in rows if "error" not in r]
    if len(ok) >= 2:
        a, b = ok[0], ok[-1]
        print(json.dumps({"task": f"scale/{args.suite}/growth", "impl": "robustlab evaluate", "reference": "linear time, flat memory", "device": args.device,
                          "n": [a["n"], b["n"]], "seconds": [a["seconds"], b["seconds"]],
                          "time_growth_over_n_growth": round((b["seconds"] / a["seconds"]) / (b["n"] / a["n"]), 3),
                          "peak_memory_ratio": round(b["peak_rss_mib"] / a["peak_rss_mib"], 3),
                          "scorecard_bytes_per_image": [a.get("scorecard_bytes_per_image"), b.get("scorecard_bytes_per_image")]}), flush=True)


if __name__ == "__main__":
    main()
