"""Benchmark: robustlab's CERTIFY against a direct transcription of Cohen et al.'s reference code.

Both run in the same process on the same model, points and budgets (n0, n, alpha, batch size). The
reference is a transcription of ``Smooth.certify`` from locuslab/smoothing ``core.py``: a Python loop
over noise batches (``x.repeat`` + ``randn_like`` on the device), predictions copied to the host
and counted in a Python loop, ``proportion_confint(method="beta")`` (written with scipy's beta
quantile; statsmodels is not a dependency). robustlab keeps noise and counts on the device, draws
noise in per-sample seeded blocks, syncs once per group of images and runs a channels-last copy of
the model.

Prints one JSON line per measurement: task, impl, reference, device, n, seconds (wall), ratio
(reference seconds / these seconds), cpu_seconds and ratio_cpu (process CPU time, steadier on a
shared machine; with several threads it also counts their spinning), plus fidelity figures (the two use independent noise, so radii agree only
up to Monte-Carlo error).

Examples:
    python bench/certify.py --quick
    python bench/certify.py --model zoo:digits-cnn --n 10000 --points 20 --threads 2
    # GPU (ResNet-18 on real CIFAR-10 images, n = 100,000; see bench/certify_gpu.sh)
    python bench/certify.py --model zoo:cifar10-resnet18 --data npz:../shared/data/cifar10_test_1000.npz \
        --device cuda --n 100000 --points 10 --sigma 0.25 --batch 1000 --our-batch 10000
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

import numpy as np
import torch
from scipy.stats import beta, norm


class ReferenceSmooth:
    """Transcription of Cohen et al.'s ``Smooth`` (certify only), the timed baseline."""

    ABSTAIN = -1

    def __init__(self, base_classifier: torch.nn.Module, num_classes: int, sigma: float, device: torch.device) -> None:
        self.base_classifier = base_classifier
        self.num_classes = num_classes
        self.sigma = sigma
        self.device = device

    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int) -> tuple[int, float]:
        counts_selection = self._sample_noise(x, n0, batch_size)
        c_a_hat = int(counts_selection.argmax())
        counts_estimation = self._sample_noise(x, n, batch_size)
        n_a = int(counts_estimation[c_a_hat])
        p_a_bar = self._lower_confidence_bound(n_a, n, alpha)
        if p_a_bar < 0.5:
            return ReferenceSmooth.ABSTAIN, 0.0
        return c_a_hat, self.sigma * float(norm.ppf(p_a_bar))

    def _sample_noise(self, x: torch.Tensor, num: int, batch_size: int) -> np.ndarray:
        with torch.no_grad():
            counts = np.zeros(self.num_classes, dtype=int)
            for _ in range(math.ceil(num / batch_size)):
                this_batch_size = min(batch_size, num)
                num -= this_batch_size
                batch = x.repeat((this_batch_size, 1, 1, 1))
                noise = torch.randn_like(batch, device=self.device) * self.sigma
                predictions = self.base_classifier(batch + noise).argmax(1)
                counts += self._count_arr(predictions.cpu().numpy(), self.num_classes)
            return counts

    def _count_arr(self, arr: np.ndarray, length: int) -> np.ndarray:
        counts = np.zeros(length, dtype=int)
        for idx in arr:
            counts[idx] += 1
        return counts

    def _lower_confidence_bound(self, n_a: int, n: int, alpha: float) -> float:
        # == statsmodels proportion_confint(n_a, n, alpha=2 * alpha, method="beta")[0]
        return float(beta.ppf(alpha, n_a, n - n_a + 1)) if n_a > 0 else 0.0


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def fidelity(ref: list[tuple[int, float]], ours: list[tuple[int, float]], y: np.ndarray) -> dict[str, Any]:
    rp = np.array([p for p, _ in ref])
    rr = np.array([r for _, r in ref])
    op = np.array([p for p, _ in ours])
    orr = np.array([r for _, r in ours])
    out: dict[str, Any] = {
        "prediction_agreement": float((rp == op).mean()),
        "mean_abs_radius_diff": float(np.abs(rr - orr).mean()),
        "max_abs_radius_diff": float(np.abs(rr - orr).max()),
    }
    for r in (0.0, 0.25, 0.5):
        out[f"certified_accuracy@r={r:g}/reference"] = float(((rp == y) & (rr >= r)).mean())
        out[f"certified_accuracy@r={r:g}/robustlab"] = float(((op == y) & (orr >= r)).mean())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="zoo:digits-cnn")
    ap.add_argument("--data", default=None, help="data spec (default: the model's data set)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sigma", type=float, default=0.25)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--n0", type=int, default=100)
    ap.add_argument("--alpha", type=float, default=0.001)
    ap.add_argument("--points", type=int, default=20, help="evenly spaced test points")
    ap.add_argument("--batch", type=int, default=1000, help="reference batch size (Cohen et al.'s default 1000)")
    ap.add_argument("--our-batch", type=int, default=0, help="robustlab batch size (0 = --batch)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="time each implementation this many times, keep the fastest")
    ap.add_argument("--ablation", choices=["auto", "on", "off"], default="auto",
                    help="also time robustlab without the channels-last copy (auto: on CPU only, to save GPU time)")
    ap.add_argument("--quick", action="store_true", help="tiny budget (for the test that runs this script)")
    args = ap.parse_args()
    if args.quick:
        args.n, args.n0, args.points, args.batch = 300, 20, 3, 100
    torch.set_num_threads(args.threads)

    from robustlab.smoothing import SmoothedClassifier
    from robustlab.data import load_dataset
    from robustlab.models import load_model
    from robustlab.seeding import sample_seeds

    device = torch.device(args.device)
    model = load_model(args.model, device=str(device))
    data = load_dataset(args.data or model.info.dataset, split="test").to_bounds(model.bounds)
    idx = [(i * len(data)) // args.points for i in range(min(args.points, len(data)))]
    x = data.images(idx).to(device)
    y = data.y[idx].numpy()
    seeds = sample_seeds(0, "bench/certify", [data.ids[i] for i in idx])
    our_batch = args.our_batch or args.batch
    common = {"task": "certify", "reference": "cohen2019-core.py-transcription", "device": str(device), "n": args.n, "n0": args.n0,
              "alpha": args.alpha, "sigma": args.sigma, "points": len(idx), "model": args.model, "threads": args.threads}

    ref = ReferenceSmooth(model, model.num_classes, args.sigma, device)
    smooth = SmoothedClassifier(model, sigma=args.sigma, batch_size=our_batch)
    plain = SmoothedClassifier(model, sigma=args.sigma, batch_size=our_batch, channels_last=False)
    ablation = args.ablation == "on" or (args.ablation == "auto" and device.type == "cpu")
    # warm-up (lazy init, the channels-last copy, kernels)
    ref.certify(x[0], args.n0, min(args.n, 2 * args.batch), args.alpha, args.batch)
    smooth.certify(x[:1], seeds[:1], n0=args.n0, n=min(args.n, 2 * our_batch), alpha=args.alpha)
    if ablation:
        plain.certify(x[:1], seeds[:1], n0=args.n0, n=min(args.n, 2 * our_batch), alpha=args.alpha)

    # Interleaved point by point (reference, robustlab, robustlab without channels-last), so that
    # changes in machine load hit all three; wall and process CPU seconds are both recorded (CPU
    # seconds are the fairer figure on a shared machine). Each repeat re-seeds; the fastest is kept.
    impls = {"reference": None, "robustlab": smooth, **({"robustlab(channels_last=False)": plain} if ablation else {})}
    wall = {k: math.inf for k in impls}
    cpu = {k: math.inf for k in impls}
    ref_out: list[tuple[int, float]] = []
    ours_out: list[tuple[int, float]] = []
    for _ in range(max(1, args.repeats)):
        torch.manual_seed(0)
        w = {k: 0.0 for k in impls}
        c = {k: 0.0 for k in impls}
        ref_out, ours_out = [], []
        for i in range(len(idx)):
            for name, sm in impls.items():
                sync(device)
                t0, c0 = time.perf_counter(), time.process_time()
                if sm is None:
                    ref_out.append(ref.certify(x[i], args.n0, args.n, args.alpha, args.batch))
                else:
                    cert = sm.certify(x[i : i + 1], seeds[i : i + 1], n0=args.n0, n=args.n, alpha=args.alpha)[0]
                    if sm is smooth:
                        ours_out.append((cert.prediction, cert.radius))
                sync(device)
                w[name] += time.perf_counter() - t0
                c[name] += time.process_time() - c0
        for k in impls:
            wall[k], cpu[k] = min(wall[k], w[k]), min(cpu[k], c[k])

    fid = fidelity(ref_out, ours_out, y)
    for name in impls:
        row = {**common, "impl": name, "batch": args.batch if name == "reference" else our_batch, "seconds": round(wall[name], 4),
               "seconds_per_point": round(wall[name] / len(idx), 4), "ratio": round(wall["reference"] / wall[name], 3),
               "cpu_seconds": round(cpu[name], 4), "ratio_cpu": round(cpu["reference"] / cpu[name], 3) if cpu[name] > 0 else None}
        if name == "robustlab":
            row.update(fid)
        print(json.dumps(row))

if __name__ == "__main__":
    main()
