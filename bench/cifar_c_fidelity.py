"""Fidelity of the fast ``cifar-c`` backend against robustlab's NumPy transcription of make_cifar_c.py,
and the corruption grid of a model under ``cifar-c`` and ``imagenet-c``.

Prints one JSON line per (corruption, severity) and a summary line:

* image statistics on ``--n`` images (8-bit outputs of both backends, same per-image seeds): max
  and mean difference in grey levels and PSNR of fast vs reference (meaningful for deterministic
  corruptions, whose outputs should agree within 1 grey level), and the mean and standard
  deviation of the perturbation ``y - x`` of each backend (random corruptions draw different
  numbers, so they are compared by these statistics);
* with ``--model``: top-1 accuracy of the 15 benchmark corruptions on the first ``--acc-n`` images
  under the fast backend, the reference backend (both ``cifar-c``) and the fast ``imagenet-c`` backend.

Usage::

    python bench/cifar_c_fidelity.py --n 1000 --acc-n 1000 --model zoo:cifar10-resnet18
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robustlab.corruptions.engine import corrupt, corruption_seeds, to_uint8
from robustlab.corruptions.registry import ALL, BENCHMARK

DETERMINISTIC = {"brightness", "contrast", "saturate", "defocus_blur", "gaussian_blur", "zoom_blur", "pixelate", "jpeg_compression"}


def _images(path: Path, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    d = np.load(path)
    return torch.from_numpy(d["x"][:n]).permute(0, 3, 1, 2).float() / 255.0, torch.from_numpy(d["y"][:n]).long()


def _accuracy(model: Any, x: torch.Tensor, y: torch.Tensor, batch: int = 200) -> float:
    with torch.no_grad():
        pred = torch.cat([model(x[i : i + batch]).argmax(1) for i in range(0, x.shape[0], batch)])
    return float((pred == y).float().mean())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_test_1000.npz"))
    ap.add_argument("--n", type=int, default=1000, help="images for the image statistics")
    ap.add_argument("--acc-n", type=int, default=0, help="images for the accuracies (needs --model)")
    ap.add_argument("--model", default=None, help="model spec, e.g. zoo:cifar10-resnet18")
    ap.add_argument("--corruptions", default="all")
    ap.add_argument("--severities", default="1,2,3,4,5")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = list(ALL) if args.corruptions == "all" else [c.strip() for c in args.corruptions.split(",")]
    sevs = [int(s) for s in args.severities.split(",")]
    x, y = _images(Path(args.data), max(args.n, args.acc_n))
    ids = [str(i) for i in range(x.shape[0])]
    model = None
    if args.model and args.acc_n:
        from robustlab.models.loaders import load_model

        model = load_model(args.model)
        print(json.dumps({"task": "clean", "accuracy": _accuracy(model, x[: args.acc_n], y[: args.acc_n]), "n": args.acc_n}), flush=True)
    acc: dict[str, dict[tuple[str, int], float]] = {"fast": {}, "reference": {}, "imagenet-c": {}}
    for name in names:
        for s in sevs:
            t0 = time.perf_counter()
            seeds = corruption_seeds(0, name, s, ids)
            fast = to_uint8(corrupt(x, name, s, seeds, protocol="cifar-c")).float()
            ref = to_uint8(corrupt(x, name, s, seeds, backend="reference", protocol="cifar-c")).float()
            clean = (x * 255).round()
            d = (fast - ref)[: args.n]
            mse = float((d**2).mean())
            rec: dict[str, Any] = {
                "task": f"{name}/s{s}", "deterministic": name in DETERMINISTIC, "n": args.n,
                "max_abs_diff_grey": float(d.abs().max()), "mean_diff_grey": round(float(d.mean()), 4),
                "psnr_db": round(10 * math.log10(255.0**2 / mse), 2) if mse > 0 else None,
                "fast_mean_abs_pert": round(float((fast - clean)[: args.n].abs().mean()), 3),
                "ref_mean_abs_pert": round(float((ref - clean)[: args.n].abs().mean()), 3),
                "fast_std_pert": round(float((fast - clean)[: args.n].std()), 3),
                "ref_std_pert": round(float((ref - clean)[: args.n].std()), 3),
            }
            if model is not None and name in BENCHMARK:
                k = args.acc_n
                acc["fast"][(name, s)] = _accuracy(model, fast[:k] / 255.0, y[:k])
                acc["reference"][(name, s)] = _accuracy(model, ref[:k] / 255.0, y[:k])
                inet = to_uint8(corrupt(x[:k], name, s, seeds[:k], protocol="imagenet-c")).float() / 255.0
                acc["imagenet-c"][(name, s)] = _accuracy(model, inet, y[:k])
                rec.update({"acc_n": k, "acc_fast": acc["fast"][(name, s)], "acc_reference": acc["reference"][(name, s)],
                            "acc_diff": round(acc["fast"][(name, s)] - acc["reference"][(name, s)], 4), "acc_imagenet_c": acc["imagenet-c"][(name, s)]})
            rec["seconds"] = round(time.perf_counter() - t0, 2)
            print(json.dumps(rec), flush=True)
    if model is not None:
        bench = [c for c in BENCHMARK if c in names]
        summary = {k: float(np.mean([v[(c, s)] for c in bench for s in sevs])) for k, v in acc.items()}
        print(json.dumps({"task": "summary", "cells": len(bench) * len(sevs), "mean_accuracy": summary,
                          "max_abs_acc_diff": max(abs(acc["fast"][c] - acc["reference"][c]) for c in acc["fast"])}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
