"""Benchmark: ``robustlab evaluate --precision`` (tf32, bf16) against fp32: speed and flips.

Runs the same suite on the same images with the same seed once per precision, each in a fresh
``robustlab evaluate`` process, and prints one JSON line per precision (task, impl, reference,
device, n, seconds, ratio = fp32 seconds / this precision's seconds) with the headline metrics of
both and the **flip count**: for every boolean per-sample array of the scorecard (clean correctness,
robust flags per epsilon, ...), the number of images whose value differs from the fp32 run.
bf16 runs attack iterations under autocast and re-verifies every result in fp32, so a flip means
the attack found (or missed) a different point, never a differently rounded verdict.

The default suite is clean accuracy, PGD-40 Linf and AutoAttack (standard, Linf): the checks whose
cost is attack iterations. Seconds are the whole process (imports and model loading included) and
the sum of the checks' own seconds (``check_seconds``).

    python bench/precision.py --device cuda --data npz:../shared/data/cifar10_test_1000.npz
    python bench/precision.py --quick            # digits, CPU, fp32 only against itself (test)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SUITE = """name: precision-bench
description: clean, PGD-40 and AutoAttack (the checks whose cost is attack iterations)
checks:
  - check: clean
  - check: pgd
    id: pgd_linf
    params: {norm: linf, steps: 40}
  - check: autoattack
    id: autoattack_linf
    params: {norm: linf, version: standard}
"""

QUICK_SUITE = """name: precision-bench-quick
description: clean and a short PGD (test)
checks:
  - check: clean
  - check: pgd
    id: pgd_linf
    params: {norm: linf, steps: 5}
"""


def _emit(**kw: Any) -> None:
    print(json.dumps(kw), flush=True)


def _bool_arrays(card: dict[str, Any]) -> dict[str, list[bool]]:
    out: dict[str, list[bool]] = {}
    for c in card.get("checks", []):
        for key, vals in (c.get("per_sample") or {}).items():
            if isinstance(vals, list) and vals and all(isinstance(v, bool) for v in vals):
                out[f"{c['id']}/{key}"] = vals
    return out


def _headline(card: dict[str, Any]) -> dict[str, float]:
    keep: dict[str, float] = {}
    for c in card.get("checks", []):
        for k, v in (c.get("metrics") or {}).items():
            if isinstance(v, (int, float)) and "/class_" not in k and (k.endswith("/accuracy") or k.endswith("/robust_accuracy")):
                keep[k] = float(v)
    return keep


def _channels_last(args: argparse.Namespace, precision: str) -> bool:
    """NAME-cl asks for --channels-last; --channels-last adds it to every non-fp32 run."""
    return precision.endswith("-cl") or (args.channels_last and precision != "fp32")


def run(args: argparse.Namespace, precision: str, suite: Path, out: Path) -> tuple[float, dict[str, Any] | None, str]:
    cmd = [sys.executable, "-m", "robustlab", "evaluate", "--model", args.model, "--suite", str(suite), "--out", str(out), "--no-mlflow",
           "--no-report", "--device", args.device, "--precision", precision.removesuffix("-cl"), "--seed", "0", "--batch-size", str(args.batch_size)]
    if args.data:
        cmd += ["--data", args.data]
    if args.limit:
        cmd += ["--limit", str(args.limit)]
    if _channels_last(args, precision):
        cmd += ["--channels-last"]
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    sec = time.perf_counter() - t
    card = out / "scorecard.json"
    if proc.returncode not in (0, 1, 3) or not card.is_file():
        return sec, None, (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1][:300]
    return sec, json.loads(card.read_text()), ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="zoo:cifar10-resnet18")
    ap.add_argument("--data", default=None)
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--precisions", nargs="+", default=["fp32", "tf32", "bf16"], help="the first is the reference; NAME-cl adds --channels-last")
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--channels-last", action="store_true", help="add --channels-last to the non-fp32 runs")
    ap.add_argument("--quick", action="store_true", help="digits, CPU, clean + PGD-5 on 64 images, fp32 twice (test)")
    args = ap.parse_args()
    if args.quick:
        args.model, args.data, args.limit, args.device, args.precisions = "zoo:digits-cnn", None, 64, "cpu", ["fp32", "fp32"]
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    with tempfile.TemporaryDirectory(prefix="robustlab-precision-") as tmp:
        suite = Path(tmp) / "suite.yaml"
        suite.write_text(QUICK_SUITE if args.quick else SUITE)
        base: dict[str, Any] | None = None
        base_sec = 0.0
        for i, prec in enumerate(args.precisions):
            sec, card, err = run(args, prec, suite, Path(tmp) / f"out{i}")
            if card is None:
                _emit(task="precision", impl=f"robustlab evaluate --precision {prec}", reference="fp32", device=args.device, error=err, seconds=round(sec, 2))
                if i == 0:
                    return 1
                continue
            check_sec = round(sum(float(c.get("seconds") or 0.0) for c in card["checks"]), 3)
            n = len(next(iter(_bool_arrays(card).values()), []))
            row: dict[str, Any] = {"task": "precision", "impl": f"robustlab evaluate --precision {prec.removesuffix('-cl')}" + (" --channels-last" if _channels_last(args, prec) else ""),
                                   "reference": "robustlab evaluate --precision fp32", "device": args.device, "model": args.model, "n": n,
                                   "seconds": round(sec, 2), "check_seconds": check_sec,
                                   "seconds_per_check": {c["id"]: c.get("seconds") for c in card["checks"]}, "metrics": _headline(card)}
            if base is None:
                base, base_sec = card, check_sec
                row["ratio"] = 1.0
            else:
                row["ratio"] = round(base_sec / check_sec, 3) if check_sec > 0 else None
                ref, ours = _bool_arrays(base), _bool_arrays(card)
                flips = {k: sum(a != b for a, b in zip(ref[k], ours[k])) for k in ref if k in ours and len(ref[k]) == len(ours[k])}
                row["flips"] = flips
                row["flips_total"] = sum(flips.values())
                row["reference_metrics"] = _headline(base)
            _emit(**row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
