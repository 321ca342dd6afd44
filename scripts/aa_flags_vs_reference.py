"""Per-sample AutoAttack flags: robustlab (``run_autoattack``, fast engine, fp32) against
``pyautoattack`` called directly, same model, data, epsilon, seed and batch.

Prints one JSON line: n, clean and robust accuracy of both, the number of points whose robust flag
differs and, for each of them, which attack broke it on each side. Not a test: a full AutoAttack
on a ResNet-18 takes a while on a CPU. Example:

    OMP_NUM_THREADS=2 python scripts/aa_flags_vs_reference.py --model /work/models/cifar10_resnet18_fastat.safetensors \
        --data npz:/work/shared/data/cifar10_test_1000.npz --n 64 --threads 2
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="zoo:cifar10-resnet18")
    ap.add_argument("--arch", default=None, help="architecture for a bare state dict (see robustlab evaluate --arch)")
    ap.add_argument("--data", default="npz:/work/shared/data/cifar10_test_1000.npz")
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--eps", type=float, default=8 / 255)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-iter", type=int, default=100)
    ap.add_argument("--square-queries", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()

    import torch
    from pyautoattack import AutoAttack

    from robustlab.attacks.autoattack import run_autoattack
    from robustlab.data import load_dataset
    from robustlab.models import load_model
    from robustlab.runner import prepare_data

    torch.set_num_threads(a.threads)
    kw = {"device": a.device}
    if a.arch:
        kw["arch"] = a.arch
    model = load_model(a.model, **kw)
    data = prepare_data(model, load_dataset(a.data, split="test").limit(a.n))
    x, y = data.images().to(a.device).contiguous(), data.y.to(a.device)
    lo, hi = (float(b) for b in model.bounds)
    assert (lo, hi) == (0.0, 1.0), "pyautoattack assumes inputs in [0, 1]"

    t0 = time.perf_counter()
    ref = AutoAttack(model, norm="Linf", eps=a.eps, seed=a.seed, version="standard", device=a.device)
    # per-attack wall time of the reference: its "robust accuracy after X: ... (total time T s)"
    # debug lines give the cumulative time since the attacks started
    cumulative: dict[str, float] = {}

    class _Times(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            m = re.match(r"robust accuracy after (\S+): .*\(total time ([0-9.]+) s\)", record.getMessage())
            if m:
                cumulative[m.group(1).lower()] = float(m.group(2))

    ref.logger.setLevel(logging.DEBUG)
    ref.logger.propagate = False
    ref.logger.addHandler(_Times())
    for at in (ref.apgd, ref.apgd_targeted):
        at.n_iter = a.n_iter
        at.n_iter_2, at.n_iter_min, at.size_decr = max(int(0.22 * a.n_iter), 1), max(int(0.06 * a.n_iter), 1), max(int(0.03 * a.n_iter), 1)
    ref.fab.n_iter = a.n_iter
    ref.square.n_queries = a.square_queries
    xa, _ = ref.run_standard_evaluation(x, y, batch_size=len(y))
    with torch.no_grad():
        ref_robust = model(xa).argmax(1).eq(y).cpu()
    t_ref = time.perf_counter() - t0
    print(json.dumps({"reference_seconds": round(t_ref, 1), "reference_robust_accuracy": float(ref_robust.float().mean()), "reference_seconds_per_attack": cumulative}),
          file=sys.stderr, flush=True)  # progress, and a partial result should the second run be cut short

    t0 = time.perf_counter()
    r = run_autoattack(model, x, y, eps=a.eps, norm="linf", engine="fast", seed=a.seed, batch_size=len(y), n_iter=a.n_iter, square_queries=a.square_queries)
    t_ours = time.perf_counter() - t0
    ref_split, prev = {}, 0.0
    for k, v in cumulative.items():
        ref_split[k], prev = round(v - prev, 1), v
    ours = r.robust.cpu()
    diff = (ours != ref_robust).nonzero()[:, 0].tolist()
    print(json.dumps({
        "model": a.model, "data": a.data, "n": len(y), "eps": a.eps, "seed": a.seed, "n_iter": a.n_iter, "square_queries": a.square_queries,
        "clean_accuracy": float(r.clean_correct.float().mean()),
        "robust_accuracy": float(ours.float().mean()), "reference_robust_accuracy": float(ref_robust.float().mean()),
        "flag_disagreements": len(diff),
        "disagreeing_points": [{"index": i, "robustlab_robust": bool(ours[i]), "reference_robust": bool(ref_robust[i]), "robustlab_fooled_by": r.fooled_by[i]} for i in diff],
        "fooled_by_counts": {k: r.fooled_by.count(k) for k in sorted(set(r.fooled_by))},
        "seconds": round(t_ours, 1), "reference_seconds": round(t_ref, 1), "speedup": round(t_ref / t_ours, 2) if t_ours > 0 else None,
        "seconds_per_attack": {k: round(v, 1) for k, v in r.seconds.items()}, "reference_seconds_per_attack": ref_split,
        "robust_accuracy_after": {k: float(v.float().mean()) for k, v in r.robust_after.items()}, "threads": a.threads,
    }), flush=True)


if __name__ == "__main__":
    main()
