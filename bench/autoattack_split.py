"""Benchmark: where AutoAttack's time goes, per member, for robustlab's fast engine and the reference engine.

Both engines run AutoAttack standard (Linf) through ``robustlab.attacks.autoattack.run_autoattack`` on the
same images, seed and batch, one after the other in this process; the ``reference`` engine runs
pyautoattack's own attack classes member by member (its flags are pyautoattack's: tests/test_attacks_autoattack.py),
so the two rows split the time of the same work. Prints one JSON line per engine (total and per-member
seconds, points left robust after each member) and a final line with the ratios and flag differences.

Examples:
    python bench/autoattack_split.py --model ROBUST.safetensors --n 32 --threads 2
    python bench/autoattack_split.py --model zoo:digits-cnn --data digits --eps 0.1 --n 32
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import torch

from common import add_cifar_args, cifar_test_spec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_cifar_args(ap)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--order", default="fast,reference", help="engines in the order they run")
    ap.add_argument("--quick", action="store_true", help="10 APGD/FAB iterations and 100 Square queries (end-to-end test)")
    ap.add_argument("--no-fold-bn", action="store_true", help="the fast engine iterates on the model itself, not on its batch-norm-folded view (evaluate's --no-fold-bn)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    logging.getLogger("auto-attack").setLevel(logging.ERROR)
    from robustlab.attacks.autoattack import run_autoattack
    from robustlab.data import load_dataset
    from robustlab.fastpaths import folded_view
    from robustlab.models import load_model
    from robustlab.parsing import parse_fraction

    data = args.data or cifar_test_spec("autoattack/split")
    if data is None:
        return
    device = torch.device(args.device)
    model = load_model(args.model, device=str(device))
    d = load_dataset(data, split="test")
    n = min(args.n, len(d))
    x, y = d.images(slice(0, n)).to(device), d.y[:n].to(device)
    eps = parse_fraction(args.eps)
    flags: dict[str, torch.Tensor] = {}
    secs: dict[str, dict[str, float]] = {}
    total: dict[str, float] = {}
    view = None if args.no_fold_bn else folded_view(model)  # what `robustlab evaluate` iterates on
    for engine in args.order.split(","):
        t0 = time.perf_counter()
        r = run_autoattack(model, x, y, eps=eps, norm="linf", engine=engine, seed=args.seed, batch_size=max(n, 1),
                           n_iter=10 if args.quick else 100, square_queries=100 if args.quick else 5000,
                           attack_model=view if engine == "fast" else None)
        total[engine] = time.perf_counter() - t0
        flags[engine], secs[engine] = r.robust, r.seconds
        print(json.dumps({"task": "autoattack/split", "engine": engine, "model": args.model, "data": data, "n": n, "eps": eps, "threads": args.threads,
                          "device": str(device), "seconds": round(total[engine], 2), "seconds_per_attack": {k: round(v, 2) for k, v in r.seconds.items()},
                          "clean_correct": int(r.clean_correct.sum()),
                          "folded_batch_norms": view.folded if view is not None and engine == "fast" else 0, "flipped": r.flipped, "robust_after": {k: int(v.sum()) for k, v in r.robust_after.items()}}), flush=True)
    if {"fast", "reference"} <= set(flags):
        print(json.dumps({"task": "autoattack/split/ratio", "model": args.model, "n": n, "threads": args.threads, "device": str(device),
                          "ratio": round(total["reference"] / total["fast"], 2),
                          "ratio_per_attack": {k: round(secs["reference"][k] / v, 2) for k, v in secs["fast"].items() if v > 0 and k in secs["reference"]},
                          "flag_disagreements": int((flags["fast"] != flags["reference"]).sum())}), flush=True)


if __name__ == "__main__":
    main()
