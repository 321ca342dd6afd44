"""Benchmark: adaptive CERTIFY (anytime-valid confidence sequence) against fixed-n CERTIFY.

Both are robustlab's, in the same process, on the same model, points, seeds, n0, alpha and cap n
(fixed: exactly n estimation samples, Clopper-Pearson; adaptive: at most n, stops when every
requested radius is decided). Chunks of points alternate between the two so that changes in machine
load hit both. Noise streams differ (selection is shared), so certified accuracies agree only up to
Monte-Carlo error: each is printed with its 95% Wilson interval over the points, and
``same_within_interval`` says whether each one lies inside the other's interval at every radius.

Prints one JSON line per sigma: task, impl, reference, device, n, seconds, ratio (fixed seconds /
adaptive seconds), samples_fixed / samples_adaptive (mean forward passes per point, n0 included),
samples_ratio, and certified accuracy per radius for both.

Examples:
    python bench/certify_adaptive.py --quick
    python bench/certify_adaptive.py --model zoo:digits-cnn --n 100000 --points 100 --sigmas 0.25
    python bench/certify_adaptive.py --model zoo:digits-cnn --n 100000 --points 100 --sigmas 0.25 --settle-wrong
    python bench/certify_adaptive.py --model zoo:cifar10-resnet18 --data npz:../shared/data/cifar10_test_1000.npz \
        --n 100000 --points 8 --sigmas 0.25
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="zoo:digits-cnn")
    ap.add_argument("--data", default=None, help="data spec (default: the model's data set)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.25])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--n0", type=int, default=100)
    ap.add_argument("--alpha", type=float, default=0.001)
    ap.add_argument("--radii", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0])
    ap.add_argument("--points", type=int, default=None, help="evenly spaced test points (default 100; 4 with --quick)")
    ap.add_argument("--chunk", type=int, default=8, help="points per alternation")
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--settle-wrong", action="store_true",
                    help="give adaptive CERTIFY the labels: a point whose selected class is not its label stops once its abstention is decided "
                         "(the certify check's default, settle_wrong)")
    ap.add_argument("--quick", action="store_true", help="tiny budget (for the test that runs this script)")
    args = ap.parse_args()
    if args.quick:
        args.n, args.n0, args.chunk = 2000, 20, 2
        args.points = args.points or 4
    args.points = args.points or 100
    torch.set_num_threads(args.threads)

    from robustlab.smoothing import SmoothedClassifier
    from robustlab.data import load_dataset
    from robustlab.stats import wilson_interval
    from robustlab.models import load_model
    from robustlab.seeding import sample_seeds

    device = torch.device(args.device)
    model = load_model(args.model, device=str(device))
    data = load_dataset(args.data or model.info.dataset, split="test").to_bounds(model.bounds)
    npts = min(args.points, len(data))
    idx = [(i * len(data)) // npts for i in range(npts)]
    x = data.images(idx).to(device)
    y = data.y[idx].numpy()
    seeds = sample_seeds(0, "bench/certify_adaptive", [data.ids[i] for i in idx])

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for sigma in args.sigmas:
        smooth = SmoothedClassifier(model, sigma=sigma, batch_size=args.batch)
        smooth.certify(x[:1], seeds[:1], n0=args.n0, n=min(args.n, 2 * args.batch), alpha=args.alpha)  # warm-up
        out: dict[str, list[Any]] = {"fixed": [], "adaptive": []}
        secs = {"fixed": 0.0, "adaptive": 0.0}
        for s in range(0, npts, args.chunk):
            sl = slice(s, min(s + args.chunk, npts))
            for mode in ("fixed", "adaptive"):
                sync()
                t0 = time.perf_counter()
                if mode == "fixed":
                    certs = smooth.certify(x[sl], seeds[sl], n0=args.n0, n=args.n, alpha=args.alpha)
                else:
                    certs = smooth.certify_adaptive(x[sl], seeds[sl], radii=args.radii, n0=args.n0, n=args.n, alpha=args.alpha,
                                                    labels=y[sl] if args.settle_wrong else None)
                sync()
                secs[mode] += time.perf_counter() - t0
                out[mode].extend(certs)
            # partial results on stderr, so that a run cut short still reports the points it finished
            print(json.dumps(summary(args, device, sigma, out, secs, y[: len(out["fixed"])], wilson_interval)), file=sys.stderr, flush=True)
        print(json.dumps(summary(args, device, sigma, out, secs, y, wilson_interval)), flush=True)


def summary(args: Any, device: torch.device, sigma: float, out: dict[str, list[Any]], secs: dict[str, float], y: np.ndarray, wilson_interval: Any) -> dict[str, Any]:
    npts = len(out["fixed"])
    if npts:
        row: dict[str, Any] = {"task": "certify_adaptive", "impl": "robustlab(adaptive)", "reference": "robustlab(fixed n, Cohen et al.)",
                               "device": str(device), "model": args.model, "n": args.n, "n0": args.n0, "alpha": args.alpha, "sigma": sigma,
                               "points": npts, "threads": args.threads, "settle_wrong": bool(args.settle_wrong), "seconds": round(secs["adaptive"], 3),
                               "seconds_fixed": round(secs["fixed"], 3), "ratio": round(secs["fixed"] / max(secs["adaptive"], 1e-9), 3)}
        samples = {m: float(np.mean([args.n0 + c.n for c in out[m]])) for m in out}
        row.update(samples_fixed=samples["fixed"], samples_adaptive=round(samples["adaptive"], 1),
                   samples_ratio=round(samples["fixed"] / samples["adaptive"], 2),
                   samples_adaptive_max=int(max(args.n0 + c.n for c in out["adaptive"])))
        same = True
        for r in args.radii:
            ks = {}
            for m in out:
                ok = np.array([(c.prediction == yy) and c.radius >= r for c, yy in zip(out[m], y)])
                ks[m] = int(ok.sum())
                iv = wilson_interval(ks[m], npts)
                row[f"certified_accuracy@r={r:g}/{m}"] = round(ks[m] / npts, 4)
                row[f"certified_accuracy@r={r:g}/{m}/interval"] = [round(iv.low, 4), round(iv.high, 4)]
            ivf, iva = wilson_interval(ks["fixed"], npts), wilson_interval(ks["adaptive"], npts)
            same &= ivf.low <= ks["adaptive"] / npts <= ivf.high and iva.low <= ks["fixed"] / npts <= iva.high
        row["same_within_interval"] = bool(same)
        row["points_differing_at_some_radius"] = int(sum(
            any((a.prediction == yy and a.radius >= r) != (f.prediction == yy and f.radius >= r) for r in args.radii)
            for a, f, yy in zip(out["adaptive"], out["fixed"], y)))
        return row
    return {}


if __name__ == "__main__":
    main()
