"""Benchmark: two intra-op threads on one batch against two Python threads of one intra-op thread each.

The question it answers (issue 18, item 2): on the 2 surviving points of an AutoAttack run the members
work on 2-18 rows at a time, where one oneDNN call may not keep two cores busy; would splitting the
rows between two threads of one core each (inter-op parallelism) be faster? Per total batch of
``2 r`` rows (``--rows``), it prints milliseconds per row of the folded attack view (as the attacks
use it) three ways: one call on ``2 r`` rows with 2 threads; two Python threads, each one call on
``r`` rows with 1 intra-op thread, at the same time; and one call on ``r`` rows with 1 thread
alone. ``ratio`` > 1 means the split is faster. Forward passes and input gradients (of the
log-sum-exp of the logits), each measured twice.

Example:
    python bench/interop_threads.py --model runs/robust.safetensors
"""

from __future__ import annotations

import argparse
import json
import threading
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="zoo:cifar10-resnet18")
    ap.add_argument("--rows", type=int, nargs="+", default=[1, 4, 9], help="rows per thread (the joint batch is twice as many)")
    ap.add_argument("--reps", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    from robustlab.fastpaths import folded_view
    from robustlab.models import load_model

    model = load_model(args.model, device="cpu")
    view = folded_view(model) or model
    c, h, w = model.input_shape or (3, 32, 32)

    def work(x: torch.Tensor, grad: bool) -> None:
        if grad:
            xx = x.clone().requires_grad_(True)
            torch.autograd.grad(view(xx).logsumexp(1).sum(), xx)
        else:
            with torch.no_grad():
                view(x)

    def one_call(rows: int, grad: bool, threads: int) -> float:
        torch.set_num_threads(threads)
        x = torch.rand(rows, c, h, w)
        work(x, grad)
        t = time.perf_counter()
        for _ in range(args.reps):
            work(x, grad)
        return (time.perf_counter() - t) / (args.reps * rows)

    def split(rows: int, grad: bool) -> float:
        torch.set_num_threads(1)
        xs = [torch.rand(rows, c, h, w) for _ in range(2)]
        for x in xs:
            work(x, grad)

        def loop(x: torch.Tensor) -> None:
            for _ in range(args.reps):
                work(x, grad)

        ts = [threading.Thread(target=loop, args=(x,)) for x in xs]
        t = time.perf_counter()
        for th in ts:
            th.start()
        for th in ts:
            th.join()
        return (time.perf_counter() - t) / (2 * args.reps * rows)

    for grad in (False, True):
        for rows in args.rows:
            for _ in range(args.repeats):
                a = one_call(2 * rows, grad, 2)
                b = split(rows, grad)
                d = one_call(rows, grad, 1)
                print(json.dumps({"task": "interop_threads", "model": args.model, "kind": "input_gradient" if grad else "forward", "rows_total": 2 * rows,
                                  "ms_row_2threads": round(a * 1e3, 3), "ms_row_2x1thread": round(b * 1e3, 3),
                                  "ms_row_1thread_alone": round(d * 1e3, 3), "ratio": round(a / b, 3)}), flush=True)


if __name__ == "__main__":
    main()
