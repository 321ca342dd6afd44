"""Benchmark: peak memory of CPU gradient passes whose batch shrinks step by step (as attacks with early
exit do), with and without bucketed batch sizes (``ROBUSTLAB_PAD_BATCHES``, issue 21).

Each mode runs in a fresh process: ``--batches`` batches of ``--batch`` images of the CIFAR-10 ResNet-18,
each shrinking over ``--steps`` input-gradient passes by a seeded random 1..batch/12 points per step, the C
heap trimmed after each batch (as ``RunContext.map_batches`` does). Prints one JSON line per mode with the
peak RSS after each batch and the seconds.

    python bench/batch_buckets.py --batch 128 --steps 12 --batches 5
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys


def child(batch: int, steps: int, batches: int) -> None:
    import random
    import resource
    import time

    import torch

    from robustlab.memory import release_free_memory
    from robustlab.models import load_model

    torch.set_num_threads(1)
    m = load_model("zoo:cifar10-resnet18", device="cpu")
    rng = random.Random(0)
    x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    peaks, t0 = [], time.perf_counter()
    for _ in range(batches):
        n = batch
        for _ in range(steps):
            xa = x[:n].clone().requires_grad_(True)
            torch.autograd.grad(m(xa).logsumexp(1).sum(), xa)
            n = max(1, n - rng.randint(1, max(2, batch // 12)))
        release_free_memory()
        peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
    print(json.dumps({"peaks_mib": peaks, "seconds": round(time.perf_counter() - t0, 1)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--batches", type=int, default=5)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a.batch, a.steps, a.batches)
        return
    for pad in ("0", "1"):
        env = {**os.environ, "ROBUSTLAB_PAD_BATCHES": pad, "OMP_NUM_THREADS": "1"}
        out = subprocess.run([sys.executable, __file__, "--child", "--batch", str(a.batch), "--steps", str(a.steps), "--batches", str(a.batches)],
                             capture_output=True, text=True, env=env, check=True).stdout.strip().splitlines()[-1]
        row = json.loads(out)
        print(json.dumps({"task": "batch_buckets", "impl": f"ROBUSTLAB_PAD_BATCHES={pad}", "reference": "ROBUSTLAB_PAD_BATCHES=0", "device": "cpu",
                          "batch": a.batch, "steps": a.steps, **row, "peak_growth_mib": row["peaks_mib"][-1] - row["peaks_mib"][0]}), flush=True)


if __name__ == "__main__":
    main()
