"""Benchmark: the attack view's channels-last copy for large CPU batches, against the contiguous folded copy.

Same process, interleaved A/B repetitions (this machine's speed drifts by 10-30% between minutes, so only
interleaved medians compare). Both sides are the batch-norm-folded view `robustlab evaluate` iterates on;
"channels_last" runs batches of at least ``FoldedView.CHANNELS_LAST_ROWS`` rows on a channels-last copy
(the default), "contiguous" never does. Prints one JSON line per measurement: the cost per row of a
forward pass and of an input gradient at the batch sizes AutoAttack's members use, then APGD-T, FAB-T and
Square on the points APGD-CE leaves robust, seconds per member and the robust flags of both sides.

Example:
    python bench/channels_last_view.py --model ROBUST.safetensors --n 32 --reps 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from common import QUICK_ITERATIONS, add_cifar_args, cifar_points, forward_call, gradient_call, per_row_ms, survivors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_cifar_args(ap)
    ap.add_argument("--reps", type=int, default=2, help="interleaved A/B repetitions of the AutoAttack members")
    ap.add_argument("--batch-size", type=int, default=128, help="rows per attack call (evaluate's --batch-size)")
    ap.add_argument("--quick", action="store_true", help="batches of 2 and 18 rows, 4 iterations, 100 Square queries (end-to-end test)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from robustlab.attacks.autoattack import run_autoattack
    from robustlab.fastpaths import FoldedView, folded_view

    points = cifar_points(args, "channels_last_view")
    if points is None:
        return
    model, x, y, eps = points
    n = len(y)
    views = {"channels_last": folded_view(model), "contiguous": folded_view(model, channels_last_rows=None)}
    if views["contiguous"] is None:
        print(json.dumps({"task": "channels_last_view", "model": args.model, "skipped": "no batch norm folds in this model"}))
        return

    reps_row = 1 if args.quick else 6
    for b in ((2, 18) if args.quick else (2, 8, 18, 27, 64)):
        xb = x[torch.arange(b) % n]
        for kind, make in (("forward", forward_call), ("input_gradient", gradient_call)):
            cost: dict[str, list[float]] = {"contiguous": [], "channels_last": []}
            for _ in range(2 if args.quick else 4):
                for name in ("contiguous", "channels_last"):
                    cost[name].append(per_row_ms(make(views[name], xb), b, reps_row))
            ma, mc = statistics.median(cost["contiguous"]), statistics.median(cost["channels_last"])
            print(json.dumps({"task": "channels_last_view/row_cost", "model": args.model, "kind": kind, "batch": b, "threads": args.threads,
                              "channels_last_from_rows": FoldedView.CHANNELS_LAST_ROWS, "contiguous_ms_per_row": round(ma, 3),
                              "view_ms_per_row": round(mc, 3), "ratio": round(ma / mc, 3)}), flush=True)

    n_iter = QUICK_ITERATIONS if args.quick else 100
    queries = 100 if args.quick else 5000
    idx, xs, ys = survivors(model, x, y, eps, attacks=["apgd-ce"], n_iter=n_iter, batch_size=args.batch_size, view=views["contiguous"])
    totals: dict[str, list[float]] = {"contiguous": [], "channels_last": []}
    flags: dict[str, torch.Tensor] = {}
    for rep in range(args.reps):
        for name in (("channels_last", "contiguous") if rep % 2 == 0 else ("contiguous", "channels_last")):
            view = views[name]
            calls0 = getattr(view, "channels_last_calls", 0)
            t0 = time.perf_counter()
            r = run_autoattack(model, xs, ys, eps=eps, attacks=["apgd-t", "fab-t", "square"], batch_size=args.batch_size, n_iter=n_iter,
                               square_queries=queries, attack_model=view)
            sec = time.perf_counter() - t0
            totals[name].append(sec)
            flags[name] = r.robust
            print(json.dumps({"task": "channels_last_view/autoattack_members", "model": args.model, "rep": rep, "view": name, "points": int(idx.numel()),
                              "seconds": round(sec, 2), "seconds_per_attack": {k: round(v, 2) for k, v in r.seconds.items()},
                              "channels_last_passes": getattr(view, "channels_last_calls", 0) - calls0,
                              "robust": int(r.robust.sum()), "flipped": r.flipped}), flush=True)
    mc, ml = statistics.median(totals["contiguous"]), statistics.median(totals["channels_last"])
    print(json.dumps({"task": "channels_last_view/autoattack_members/ratio", "model": args.model, "points": int(idx.numel()), "threads": args.threads,
                      "contiguous_seconds_median": round(mc, 2), "channels_last_seconds_median": round(ml, 2), "ratio": round(mc / ml, 3),
                      "flag_disagreements": int((flags["contiguous"] != flags["channels_last"]).sum())}), flush=True)


if __name__ == "__main__":
    main()
