"""Benchmark: certification's noisy forward passes on a CPU, by noise batch and batch-norm folding.

Counts ``--num`` votes per image for ``--points`` images with robustlab's ``SmoothedClassifier`` (the code
CERTIFY and PREDICT spend their time in) in each configuration, interleaved over ``--reps`` rounds in one
process (this machine's speed drifts between minutes, so only interleaved medians compare), and checks that
every configuration gives the same votes up to a rounding tie. Prints one JSON line per configuration and a
summary.

Example:
    python bench/smoothing_votes.py --model zoo:cifar10-resnet18 --points 4 --num 10000
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="zoo:cifar10-resnet18")
    ap.add_argument("--data", default="samples:cifar10")
    ap.add_argument("--points", type=int, default=4)
    ap.add_argument("--num", type=int, default=10_000)
    ap.add_argument("--sigma", type=float, default=0.25)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from robustlab.data import load_dataset
    from robustlab.models import load_model
    from robustlab.smoothing.classifier import SmoothedClassifier

    model = load_model(args.model, device="cpu")
    d = load_dataset(args.data, split="test")
    x = d.images(slice(0, args.points))
    seeds = list(range(args.points))
    configs = {  # name: (noise batch, fold batch norms)
        "batch1000_unfolded (before)": (1000, False),
        "batch1000_folded": (1000, True),
        "batch128_unfolded": (128, False),
        "batch128_folded (now, CPU default)": (128, True),
    }
    secs: dict[str, list[float]] = {k: [] for k in configs}
    votes: dict[str, torch.Tensor] = {}
    for _ in range(args.reps):
        for name, (batch, fold) in configs.items():
            smooth = SmoothedClassifier(model, sigma=args.sigma, batch_size=batch, fold_bn=fold)
            t0 = time.perf_counter()
            votes[name] = smooth.votes(x, seeds, num=args.num, phase="estimate").cpu()
            secs[name].append(time.perf_counter() - t0)
    base = votes["batch1000_unfolded (before)"]
    for name in configs:
        med = statistics.median(secs[name])
        print(json.dumps({"task": "smoothing/votes", "model": args.model, "config": name, "points": args.points, "num": args.num, "threads": args.threads,
                          "seconds_median": round(med, 2), "ms_per_noisy_image": round(1000 * med / (args.points * args.num), 3),
                          "max_vote_difference_vs_before": int((votes[name] - base).abs().max())}), flush=True)
    before, now = statistics.median(secs["batch1000_unfolded (before)"]), statistics.median(secs["batch128_folded (now, CPU default)"])
    print(json.dumps({"task": "smoothing/votes/ratio", "model": args.model, "speedup_now_vs_before": round(before / now, 2),
                      "same_predictions": bool(torch.equal(base.argmax(1), votes["batch128_folded (now, CPU default)"].argmax(1)))}), flush=True)


if __name__ == "__main__":
    main()
