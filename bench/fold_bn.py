"""Benchmark: attack iterations on the batch-norm-folded copy of a model vs on the model itself.

Same process, interleaved A/B repetitions (this machine's speed drifts by 10-30% between minutes, so
only interleaved medians compare): the cost per row of a forward pass and of an input gradient at the
batch sizes AutoAttack's members use on a few surviving points, then AutoAttack's gradient members
(APGD-CE, APGD-T, FAB-T) on the points APGD-CE leaves robust, with and without the folded copy, and
their robust flags. Prints one JSON line per measurement.

Example:
    python bench/fold_bn.py --model ROBUST.safetensors --n 32 --reps 2
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
    ap.add_argument("--quick", action="store_true", help="batches of 2 and 18 rows, 4 iterations per member (end-to-end test)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from robustlab.attacks.autoattack import run_autoattack
    from robustlab.fastpaths import folded_view

    points = cifar_points(args, "fold_bn")
    if points is None:
        return
    model, x, y, eps = points
    n = len(y)
    view = folded_view(model)
    if view is None:
        print(json.dumps({"task": "fold_bn", "model": args.model, "skipped": "no batch norm folds in this model"}))
        return

    reps_row = 2 if args.quick else 8
    for b in ((2, 18) if args.quick else (2, 8, 18, 27)):
        xb = x[torch.arange(b) % n]
        for kind, make in (("forward", forward_call), ("input_gradient", gradient_call)):
            a = [per_row_ms(make(model, xb), b, reps_row) for _ in range(1)]
            c = [per_row_ms(make(view, xb), b, reps_row) for _ in range(1)]
            for _ in range(1 if args.quick else 4):
                a.append(per_row_ms(make(model, xb), b, reps_row))
                c.append(per_row_ms(make(view, xb), b, reps_row))
            ma, mc = statistics.median(a), statistics.median(c)
            print(json.dumps({"task": "fold_bn/row_cost", "model": args.model, "kind": kind, "batch": b, "threads": args.threads,
                              "model_ms_per_row": round(ma, 3), "folded_ms_per_row": round(mc, 3), "ratio": round(ma / mc, 3),
                              "folded_batch_norms": view.folded}), flush=True)

    n_iter = QUICK_ITERATIONS if args.quick else 100
    idx, xs, ys = survivors(model, x, y, eps, attacks=["apgd-ce"], n_iter=n_iter, batch_size=max(n, 1))
    totals: dict[str, list[float]] = {"model": [], "folded": []}
    flags: dict[str, torch.Tensor] = {}
    for rep in range(args.reps):
        for name, am in (("folded", view), ("model", None)):
            t0 = time.perf_counter()
            r = run_autoattack(model, xs, ys, eps=eps, attacks=["apgd-ce", "apgd-t", "fab-t"], batch_size=max(n, 1), n_iter=n_iter, attack_model=am)
            sec = time.perf_counter() - t0
            totals[name].append(sec)
            flags[name] = r.robust
            print(json.dumps({"task": "fold_bn/autoattack_gradient_members", "model": args.model, "rep": rep, "attack_model": name, "points": int(idx.numel()),
                              "seconds": round(sec, 2), "seconds_per_attack": {k: round(v, 2) for k, v in r.seconds.items()},
                              "robust": int(r.robust.sum()), "flipped": r.flipped}), flush=True)
    print(json.dumps({"task": "fold_bn/autoattack_gradient_members/ratio", "model": args.model, "points": int(idx.numel()), "threads": args.threads,
                      "model_seconds_median": round(statistics.median(totals["model"]), 2), "folded_seconds_median": round(statistics.median(totals["folded"]), 2),
                      "ratio": round(statistics.median(totals["model"]) / statistics.median(totals["folded"]), 3),
                      "flag_disagreements": int((flags["model"] != flags["folded"]).sum())}), flush=True)


if __name__ == "__main__":
    main()
