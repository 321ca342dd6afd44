"""Benchmark: Square's calibrated tie width against the fixed one, on the points AutoAttack leaves to Square.

A Square decision whose margins lie within the tie width of each other is taken on margins computed with
the candidate alone (a forward pass of one row), so that the result does not depend on the look-ahead
depth. The default width starts at ``TIE`` and follows 16x the largest batch-against-alone rounding the
run measures on its own ties; "fixed" keeps ``TIE`` all the way. Same process, interleaved A/B repetitions
(this machine's speed drifts by 10-30% between minutes). Prints one JSON line per Square run (seconds,
forward passes of one row and of more, rows) and a summary with the ratio of the medians and whether
both sides gave the same points bit for bit.

Example:
    python bench/square_ties.py --model ROBUST.safetensors --n 32 --reps 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from common import QUICK_ITERATIONS, add_cifar_args, cifar_points, survivors


class _Passes(nn.Module):
    """Counts the forward passes and rows of the model it wraps."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.single = self.multi = self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 1:
            self.single += 1
        else:
            self.multi += 1
        self.rows += int(x.shape[0])
        out: torch.Tensor = self.net(x)
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_cifar_args(ap)
    ap.add_argument("--reps", type=int, default=2, help="interleaved A/B repetitions")
    ap.add_argument("--queries", type=int, default=5000)
    ap.add_argument("--quick", action="store_true", help="4 attack iterations before Square, 300 queries (end-to-end test)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from robustlab.attacks.square import TIE, square_linf
    from robustlab.fastpaths import folded_view

    points = cifar_points(args, "square_ties")
    if points is None:
        return
    model, x, y, eps = points
    view = folded_view(model) or model
    queries = 300 if args.quick else args.queries
    idx, xs, ys = survivors(model, x, y, eps, attacks=["apgd-ce", "apgd-t", "fab-t"], n_iter=QUICK_ITERATIONS if args.quick else 100, batch_size=128, view=view)
    totals: dict[str, list[float]] = {"calibrated": [], "fixed": []}
    points: dict[str, torch.Tensor] = {}
    for rep in range(args.reps):
        for name in (("calibrated", "fixed") if rep % 2 == 0 else ("fixed", "calibrated")):
            counted = _Passes(view)
            t0 = time.perf_counter()
            out = square_linf(counted, xs, ys, eps, n_queries=queries, seed=0, tie_width=TIE if name == "fixed" else None)
            sec = time.perf_counter() - t0
            totals[name].append(sec)
            points.setdefault(name, out)
            with torch.no_grad():
                robust = int(model(out).argmax(1).eq(ys).sum()) if len(ys) else 0
            print(json.dumps({"task": "square_ties/run", "model": args.model, "rep": rep, "tie_width": name, "points": int(idx.numel()),
                              "queries": queries, "seconds": round(sec, 2), "one_row_passes": counted.single, "multi_row_passes": counted.multi,
                              "rows": counted.rows, "robust": robust}), flush=True)
    mf, mc = statistics.median(totals["fixed"]), statistics.median(totals["calibrated"])
    print(json.dumps({"task": "square_ties/ratio", "model": args.model, "points": int(idx.numel()), "threads": args.threads, "queries": queries,
                      "fixed_seconds_median": round(mf, 2), "calibrated_seconds_median": round(mc, 2), "ratio": round(mf / mc, 3) if mc else None,
                      "same_points": bool(torch.equal(points["fixed"], points["calibrated"]))}), flush=True)


if __name__ == "__main__":
    main()
