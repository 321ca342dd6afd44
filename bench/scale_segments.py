"""One scale row from a run made in segments (stopped with Ctrl-C, continued with ``--resume``).

A size too large for one sitting (the 10,000-image ``standard`` suite on 2 cores takes hours) is run as
``robustlab evaluate ... --out OUT`` under GNU ``/usr/bin/time -v``, interrupted (SIGINT: exit 130, completed
batches kept) and continued with ``--resume`` as often as needed, each segment's ``time -v`` report in its
own log. This prints the same JSON row as ``bench/scale.py`` for that size: seconds = the sum of the
segments' wall-clock times, peak_rss_mib = the largest segment's peak (each segment is a fresh process),
scorecard size from OUT/scorecard.json, plus every segment's own figures. Each check's seconds come from the
scorecard too, which the last segment wrote: with several segments they are that segment's
(``seconds_by_check_last_segment``), and a check it resumed shows only the time to reuse its stored batches.

Example:
    python bench/scale_segments.py --out /work/scale10k/out --model zoo:cifar10-resnet18 \\
        --data npz:cifar10_10000.npz /work/scale10k/seg-*.log
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from scale import seconds_by_check  # bench/ is on the path when this file runs as a script

_ELAPSED = re.compile(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\):\s*(\S+)")
_PEAK = re.compile(r"Maximum resident set size \(kbytes\):\s*(\d+)")
_STATUS = re.compile(r"Exit status:\s*(\d+)")
_REUSED = re.compile(r"resuming: (\d+) stored batch results reused")


def _clock_seconds(text: str) -> float:
    """GNU time's wall clock, ``h:mm:ss`` or ``m:ss.ss``, in seconds."""
    seconds = 0.0
    for part in text.split(":"):
        seconds = seconds * 60 + float(part)
    return seconds


def parse_segment(log: str) -> dict[str, Any]:
    """Wall-clock seconds, peak resident memory (MiB) and exit status of one ``/usr/bin/time -v`` log."""
    elapsed, peak, status = _ELAPSED.search(log), _PEAK.search(log), _STATUS.search(log)
    if not (elapsed and peak and status):
        raise ValueError("not a finished `/usr/bin/time -v` report (no Elapsed / Maximum resident set size / Exit status line)")
    reused = _REUSED.search(log)
    return {"seconds": round(_clock_seconds(elapsed.group(1)), 2), "peak_rss_mib": round(int(peak.group(1)) / 1024, 1),
            "exit_code": int(status.group(1)), "stored_batches_reused": int(reused.group(1)) if reused else 0}


def combine(segments: list[dict[str, Any]], scorecard_path: Path) -> dict[str, Any]:
    """The scale row of the whole run: the segments in order, the last one the run that wrote the scorecard."""
    if not segments:
        raise ValueError("no segments")
    interrupted = [s for s in segments[:-1] if s["exit_code"] != 130]
    if interrupted:
        raise ValueError(f"a segment before the last ended with exit {interrupted[0]['exit_code']}, not 130 (interrupted, batches kept)")
    scorecard = json.loads(scorecard_path.read_text())
    n = int(scorecard["data"]["n"])
    size = scorecard_path.stat().st_size
    seconds = round(sum(s["seconds"] for s in segments), 2)
    row: dict[str, Any] = {"n": n, "seconds": seconds, "seconds_per_image": round(seconds / n, 4),
                           "peak_rss_mib": max(s["peak_rss_mib"] for s in segments), "exit_code": segments[-1]["exit_code"],
                           "scorecard_bytes": size, "scorecard_bytes_per_image": round(size / n, 1),
                           "segments": segments}
    # the scorecard is the last segment's: a check it resumed shows only the time to reuse its stored batches
    row["seconds_by_check" if len(segments) == 1 else "seconds_by_check_last_segment"] = seconds_by_check(scorecard)
    after = scorecard.get("environment", {}).get("memory", {}).get("peak_rss_mib_after_check")
    if after:
        row["peak_rss_mib_after_check"] = after  # of the last segment's process
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("logs", nargs="+", type=Path, help="each segment's /usr/bin/time -v log, in the order they ran")
    ap.add_argument("--out", type=Path, required=True, help="the run's --out folder (holds scorecard.json)")
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--suite", default="standard")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    segments = [{"log": p.name, **parse_segment(p.read_text(errors="replace"))} for p in args.logs]
    row = {"task": f"scale/{args.suite}", "impl": "robustlab evaluate (in segments, --resume)", "reference": "linear time, flat memory",
           "device": args.device, "model": args.model, "data": args.data, "threads": args.threads,
           **combine(segments, args.out / "scorecard.json")}
    print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
