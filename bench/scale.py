"""Benchmark: how time, peak memory and scorecard size grow with the number of images.

Runs ``robustlab evaluate`` once per size n (a fresh process each, so peak memory is that run's
own: ``wait4``'s ``ru_maxrss``) and prints one JSON line per size (task, impl, reference, device,
n, seconds, seconds_per_image, peak_rss_mib, scorecard_bytes, scorecard_bytes_per_image, and
seconds_by_check: each check's own seconds from the scorecard, so growth can be laid at a check's door) and a
final line with the growth: time ratio / n ratio between the largest and smallest size (1 = linear),
peak memory ratio (1 = flat) and scorecard bytes per image at both ends.

Examples:
    python bench/scale.py --quick
    python bench/scale.py --model zoo:digits-cnn --data digits-all --sizes 360 1797 --suite standard
    python bench/scale.py --model zoo:cifar10-resnet18 --data npz:../shared/data/cifar10_test_1000.npz --sizes 200 1000
    python bench/scale.py --model zoo:cifar10-resnet18 --data npz:../shared/data/cifar10_9000_jpeg.npz --sizes 9000
    python bench/scale.py --torchrun 2 --threads 1 ...        # each rank's peak (scorecard environment.memory)
    python bench/scale.py --resume-after 120 ...              # kill -9 after 120 s, then --resume: both peaks
    python bench/scale.py --keep runs/ ...                    # keep each size's output folder (runs/n<N>)

``--data digits-all`` evaluates all 1,797 scikit-learn digits (the ``digits`` spec is its 360-image test
split): a temporary npz holds every image as the evaluated split and the usual 1,293 training images as
``x_train`` (what the OOD check fits on). It includes the model's training images, so it measures cost,
not accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux /proc), children first."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(d.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        out += kids
        todo += kids
    return out


def _launch(cmd: list[str], kill_after: float | None) -> tuple[int, float, float, str, bool]:
    """Run ``cmd`` in its own session; with ``kill_after``, SIGKILL the whole session after that many
    seconds. Returns (exit code, seconds, peak RSS in MiB of the largest process, stderr, killed)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as errf:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=errf, text=True, start_new_session=True)
        killed = False
        if kill_after is not None:
            # poll without reaping: wait4 below must collect the child's resource usage
            while time.perf_counter() - t0 < kill_after and os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                time.sleep(0.2)
            if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
                # a crash of the whole machine, not a clean stop: torchrun starts each rank in a session of
                # its own, so killing the launcher's group would leave the ranks running (and holding --out)
                for pid in [proc.pid, *_descendants(proc.pid)]:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                killed = True
        # wait4's ru_maxrss covers the child and the descendants it waited for: under torchrun, the largest rank
        _, status, usage = os.wait4(proc.pid, 0)
        sec = time.perf_counter() - t0
        errf.seek(0)
        err = errf.read()
    return os.waitstatus_to_exitcode(status), sec, usage.ru_maxrss / 1024, err, killed


def digits_all(folder: Path) -> str:
    """An npz of all 1,797 scikit-learn digits (evaluated split) with the ``digits`` training split as
    ``x_train``/``y_train``; returns its data spec."""
    import numpy as np
    from sklearn.datasets import load_digits

    from robustlab.data import load_dataset

    d = load_digits()
    train = load_dataset("digits", split="train")
    path = folder / "digits_all.npz"
    np.savez(path, x=(d.images / 16.0).astype(np.float32), y=d.target.astype(np.int64),
             x_train=train.x[:, 0].numpy(), y_train=train.y.numpy())
    return f"npz:{path}"


def seconds_by_check(scorecard: dict[str, Any]) -> dict[str, float]:
    """Each check's own seconds from a scorecard's ``timings`` (``check/<id>`` keys), in the suite's order."""
    return {k.split("/", 1)[1]: v for k, v in scorecard.get("timings", {}).items() if k.startswith("check/")}


def run_one(args: argparse.Namespace, n: int, out: Path) -> dict[str, Any]:
    launcher = [sys.executable, "-m", "robustlab"]
    if args.torchrun > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(args.torchrun), "-m", "robustlab"]
    cmd = [*launcher, "evaluate", "--model", args.model, "--suite", args.suite, "--limit", str(n), "--out", str(out),
           "--no-mlflow", "--no-report", "--device", args.device, "--threads", str(args.threads), "--batch-size", str(args.batch_size)]
    if args.data:
        cmd += ["--data", args.data_spec]
        if args.data == "digits-all":
            cmd += ["--dataset", "digits"]
    row: dict[str, Any] = {"task": f"scale/{args.suite}", "impl": "robustlab evaluate", "reference": "linear time, flat memory", "device": args.device,
                           "model": args.model, "data": args.data, "n": n, "threads": args.threads}
    if args.torchrun > 1:
        row["torchrun_processes"] = args.torchrun
    seconds = 0.0
    if args.resume_after is not None:
        code, sec, peak, err, killed = _launch(cmd, args.resume_after)
        seconds += sec
        row["killed_run"] = {"killed_after_seconds": round(sec, 2), "killed": killed, "peak_rss_mib": round(peak, 1)}
        if args.torchrun > 1:  # the ranks were never waited for by their killed launcher: wait4 saw the launcher alone
            row["killed_run"]["peak_rss_mib_is"] = "the torchrun launcher's own"
        partial = out / "scorecard.json"
        if killed and partial.is_file():  # written after every finished check: rank 0's peak up to the last one
            row["killed_run"]["peak_rss_mib_after_check"] = json.loads(partial.read_text()).get("environment", {}).get("memory", {}).get("peak_rss_mib_after_check")
        if killed:
            cmd = [*cmd, "--resume"]
    code, sec, peak, err, _ = _launch(cmd, None)
    seconds += sec
    if "--resume" in cmd:
        m = re.search(r"resuming: (\d+) stored batch results reused", err)
        row["resumed_run"] = {"seconds": round(sec, 2), "peak_rss_mib": round(peak, 1), "stored_batches_reused": int(m.group(1)) if m else None}
    row.update(seconds=round(seconds, 2), seconds_per_image=round(seconds / n, 4), peak_rss_mib=round(peak, 1), exit_code=code)
    card = out / "scorecard.json"
    if card.is_file():
        size = card.stat().st_size
        row.update(scorecard_bytes=size, scorecard_bytes_per_image=round(size / n, 1))
        scorecard = json.loads(card.read_text())
        memory = scorecard.get("environment", {}).get("memory", {})
        row["seconds_by_check"] = seconds_by_check(scorecard)
        if "peak_rss_mib_by_rank" in memory:
            row["peak_rss_mib_by_rank"] = memory["peak_rss_mib_by_rank"]
        if memory.get("peak_rss_mib_after_check"):
            row["peak_rss_mib_after_check"] = memory["peak_rss_mib_after_check"]
    if code not in (0, 1, 3) or (code != 0 and args.torchrun > 1):  # torchrun exits 1 whatever its ranks' codes were
        row["error"] = " | ".join(line.strip() for line in err.strip().splitlines()[-40:] if line.strip() and not line.startswith(" "))[-1500:] or "failed"
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
    ap.add_argument("--torchrun", type=int, default=1, metavar="K", help="run under torchrun with K processes (each rank's peak is reported)")
    ap.add_argument("--resume-after", type=float, default=None, metavar="S",
                    help="kill -9 the run after S seconds, then finish it with --resume (reports both runs' peaks)")
    ap.add_argument("--quick", action="store_true", help="quick suite, 16 and 48 digits images (for the test)")
    ap.add_argument("--keep", type=Path, default=None, metavar="DIR",
                    help="write each size's output folder to DIR/n<N> and keep it (default: a temporary folder, removed)")
    args = ap.parse_args()
    if args.quick:
        args.suite, args.sizes, args.threads = "quick", [16, 48], 1
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="robustlab-scale-"))
    args.data_spec = digits_all(tmp) if args.data == "digits-all" else args.data
    runs = args.keep if args.keep is not None else tmp
    try:
        for n in sorted(args.sizes):
            row = run_one(args, n, runs / f"n{n}")
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
