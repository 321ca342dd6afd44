"""Benchmark: robustlab's fast corruption backend against the reference ``imagecorruptions``.

Prints one JSON line per measurement (keys ``task, impl, reference, device, n, seconds, ratio`` plus
images per second and fidelity figures):

* ``corrupt/<name>/<H>x<W>/s<k>``: one corruption at one severity on n images, fast (batched, on
  ``--device`` with ``--threads`` CPU threads) vs reference (one image at a time, one thread);
  ``ratio`` = reference seconds / fast seconds. Fidelity: max difference in grey levels and PSNR
  (meaningful for deterministic corruptions), mean |perturbation| of both (random ones).
* ``grid-cell/<name>/s<k>/<data>`` and ``grid/<C>x<S>/<data>``: the whole corruption x severity grid
  on the shared 1000 CIFAR-10 test images (or ``--grid-n``), cell by cell: fast in batches of
  ``--grid-batch`` (128, evaluate's default), then the reference on the first ``--grid-ref-n`` of the
  same images (default all), same process, both on ``--threads`` threads (default 1; numpy, scipy
  and OpenCV are held to one thread); images/s of each backend and ratio per cell and overall.

Usage::

    python bench/corruptions.py                  # everything (the grid takes minutes)
    python bench/corruptions.py --quick          # tiny budget (used by the test suite)
    python bench/corruptions.py --device cuda --skip-reference   # GPU images/s only
    python bench/corruptions.py --protocol cifar-c  # cifar-c: fast vs the make_cifar_c.py transcription
    python bench/corruptions.py --protocol cifar-c --skip-single --grid-ref-n 200   # the grid only
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")  # the reference (numpy/scipy/OpenCV) runs on one core

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from robustlab.corruptions.engine import corrupt, corruption_seeds
from robustlab.corruptions.registry import ALL

DETERMINISTIC = {"brightness", "contrast", "saturate", "defocus_blur", "gaussian_blur", "zoom_blur", "pixelate", "jpeg_compression"}
QUICK = ("gaussian_noise", "contrast", "zoom_blur")
_PROTO = ["imagenet-c"]  # set by --protocol
_REF = {"imagenet-c": "imagecorruptions-1.1.2", "cifar-c": "make_cifar_c.py (robustlab NumPy transcription)"}


def _shared_images() -> tuple[torch.Tensor, str]:
    here = Path(__file__).resolve()
    for cand in (here.parents[2] / "shared" / "data", here.parents[1] / "shared" / "data"):
        f = cand / "cifar10_test_1000.npz"
        if f.is_file():
            x = np.load(f)["x"]
            return torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255.0, "cifar10-test-1000"
    g = torch.Generator().manual_seed(0)
    x = F.interpolate(torch.rand(1000, 3, 8, 8, generator=g), size=(32, 32), mode="bicubic", align_corners=False).clamp(0, 1)
    return (x * 255).round() / 255, "synthetic-1000"


def _timed(fn: Callable[[], torch.Tensor], device: torch.device) -> tuple[torch.Tensor, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return out, time.perf_counter() - t


def _emit(rec: dict[str, Any]) -> None:
    print(json.dumps(rec, sort_keys=False), flush=True)


def _fidelity(ref: torch.Tensor, fast: torch.Tensor, clean: torch.Tensor) -> dict[str, float | None]:
    ref, fast, clean = ref.cpu(), fast.cpu(), clean.cpu()
    mse = float(((ref - fast) ** 2).mean())
    return {
        "max_abs_diff_grey": round(float((ref - fast).abs().max()) * 255, 4),
        "psnr_db": None if mse == 0 else round(10 * math.log10(1.0 / mse), 2),
        "mean_abs_perturbation_reference": round(float((ref - clean).abs().mean()), 6),
        "mean_abs_perturbation_fast": round(float((fast - clean).abs().mean()), 6),
    }


def bench_single(names: list[str], x: torch.Tensor, severity: int, device: torch.device, threads: int, skip_reference: bool, warmup: bool) -> None:
    h, w = x.shape[2], x.shape[3]
    ids = [str(i) for i in range(x.shape[0])]
    xd = x.to(device)
    for name in names:
        seeds = corruption_seeds(0, name, severity, ids)
        torch.set_num_threads(threads)
        if warmup:
            corrupt(xd[:1], name, severity, seeds[:1], protocol=_PROTO[0])
            torch.matmul(torch.rand(512, 512, device=device), torch.rand(512, 512, device=device))
        fast, t_fast = _timed(lambda: corrupt(xd, name, severity, seeds, protocol=_PROTO[0]), device)
        rec: dict[str, Any] = {
            "task": f"corrupt/{name}/{h}x{w}/s{severity}", "impl": "robustlab-fast", "reference": _REF[_PROTO[0]],
            "device": str(device), "threads": threads, "n": int(x.shape[0]), "seconds": round(t_fast, 5),
            "images_per_s": round(x.shape[0] / t_fast, 2) if t_fast > 0 else None, "deterministic": name in DETERMINISTIC,
        }
        if not skip_reference:
            torch.set_num_threads(1)
            ref, t_ref = _timed(lambda: corrupt(x, name, severity, seeds, backend="reference", protocol=_PROTO[0]), torch.device("cpu"))
            rec.update({
                "reference_seconds": round(t_ref, 5), "reference_threads": 1,
                "reference_images_per_s": round(x.shape[0] / t_ref, 2) if t_ref > 0 else None,
                "ratio": round(t_ref / t_fast, 3) if t_fast > 0 else None,
            })
            rec.update(_fidelity(ref, fast, x))
        else:
            rec["ratio"] = None
        if device.type != "cpu":  # the same corruption on the CPU: the scorecard must not depend on the device
            on_cpu = corrupt(x, name, severity, seeds, protocol=_PROTO[0])
            diff = (fast.cpu() - on_cpu).abs() * 255
            rec.update({"device_vs_cpu_max_abs_diff_grey": round(float(diff.max()), 4),
                        "device_vs_cpu_pixels_differing": round(float((diff > 0.5).float().mean()), 6)})
        _emit(rec)


def bench_grid(names: list[str], x: torch.Tensor, data_name: str, device: torch.device, threads: int, skip_reference: bool, batch: int, ref_n: int) -> None:
    """The corruption x severity grid, cell by cell: the fast backend on all n images (batches of
    ``batch``), then the reference on the first ``ref_n`` of the same images, in the same process
    with the same number of threads; one JSON line per cell and one for the whole grid. The ratio
    compares time per image (reference seconds / ref_n over fast seconds / n)."""
    n = int(x.shape[0])
    m = n if ref_n <= 0 else min(ref_n, n)
    ids = [str(i) for i in range(n)]
    sevs = [1, 2, 3, 4, 5]
    torch.set_num_threads(threads)
    xd = x.to(device)
    corrupt(xd[:2], names[0], 1, [0, 1], protocol=_PROTO[0])  # warm-up: imports, BLAS initialisation (operators are
    torch.matmul(torch.rand(3000, 1024, device=device), torch.rand(1024, 1024, device=device))  # built inside the timing)
    t_fast = t_ref = 0.0
    for name in names:
        # warm-up of both backends on 2 images (lazy imports, cached operators): throughput, not start-up
        corrupt(xd[:2], name, 1, [0, 1], protocol=_PROTO[0])
        if not skip_reference:
            corrupt(x[:2], name, 1, [0, 1], backend="reference", protocol=_PROTO[0])
        for s in sevs:
            seeds = corruption_seeds(0, name, s, ids)

            def run_fast() -> torch.Tensor:
                acc = torch.zeros((), device=device)
                for i in range(0, n, batch):
                    acc = acc + corrupt(xd[i : i + batch], name, s, seeds[i : i + batch], protocol=_PROTO[0]).mean()
                return acc

            _, tf = _timed(run_fast, device)
            t_fast += tf
            rec: dict[str, Any] = {
                "task": f"grid-cell/{name}/s{s}/{data_name}", "impl": "robustlab-fast", "reference": _REF[_PROTO[0]], "device": str(device),
                "threads": threads, "n": n, "seconds": round(tf, 4), "images_per_s": round(n / tf, 1), "ratio": None,
            }
            if not skip_reference:
                _, tr = _timed(lambda: corrupt(x[:m], name, s, seeds[:m], backend="reference", protocol=_PROTO[0]), torch.device("cpu"))
                t_ref += tr
                rec.update({"reference_n": m, "reference_seconds": round(tr, 4), "reference_threads": threads,
                            "reference_images_per_s": round(m / tr, 1), "ratio": round((tr / m) / (tf / n), 2)})
            _emit(rec)
    cells = len(names) * len(sevs)
    rec = {
        "task": f"grid/{len(names)}x{len(sevs)}/{data_name}", "impl": "robustlab-fast", "reference": _REF[_PROTO[0]],
        "device": str(device), "threads": threads, "n": n, "batch": batch, "images": n * cells,
        "seconds": round(t_fast, 3), "images_per_s": round(n * cells / t_fast, 1),
    }
    if not skip_reference:
        rec.update({"reference_n": m, "reference_images": m * cells, "reference_seconds": round(t_ref, 3), "reference_threads": threads,
                    "reference_images_per_s": round(m * cells / t_ref, 1), "ratio": round((t_ref / m) / (t_fast / n), 2)})
    else:
        rec["ratio"] = None
    _emit(rec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny budget: 3 corruptions, few images, small grid")
    ap.add_argument("--device", default="cpu", help="device of the fast backend (cpu, cuda, cuda:N)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads of both backends in the grid (like with like; the per-corruption timings run the reference on 1)")
    ap.add_argument("--corruptions", default="all", help="comma-separated names or 'all'")
    ap.add_argument("--severity", type=int, default=3, help="severity of the per-corruption timings")
    ap.add_argument("--n32", type=int, default=200, help="images for the 32x32 timings")
    ap.add_argument("--n224", type=int, default=8, help="images for the 224x224 timings")
    ap.add_argument("--grid-n", type=int, default=1000, help="images of the full-grid timing (0 skips it)")
    ap.add_argument("--grid-batch", type=int, default=128, help="batch size of the fast backend in the grid (128: robustlab evaluate's default --batch-size)")
    ap.add_argument("--grid-ref-n", type=int, default=0, help="images of the reference in the grid (the first ones; 0: all --grid-n)")
    ap.add_argument("--skip-reference", action="store_true", help="time only the fast backend (e.g. on a GPU)")
    ap.add_argument("--skip-single", action="store_true", help="skip the per-corruption timings (grid only)")
    ap.add_argument("--protocol", choices=sorted(_REF), default="imagenet-c", help="corruption protocol; cifar-c times only 32x32 images")
    args = ap.parse_args(argv)
    _PROTO[0] = args.protocol

    device = torch.device(args.device)
    names = list(ALL) if args.corruptions == "all" else [c.strip() for c in args.corruptions.split(",") if c.strip()]
    if args.quick:
        names = [n for n in QUICK if n in names] or names[:3]
        args.n32, args.n224, args.grid_n = 8, 1, min(args.grid_n, 16)
        args.grid_ref_n = min(args.grid_ref_n, args.grid_n) if args.grid_ref_n else 0
    images, data_name = _shared_images()
    x32 = images[: args.n32]
    x224 = (F.interpolate(images[: args.n224], size=(224, 224), mode="bilinear", align_corners=False).clamp(0, 1) * 255).round() / 255
    _emit({"task": "setup", "impl": "robustlab-fast", "reference": _REF[_PROTO[0]], "device": str(device), "n": int(images.shape[0]),
           "seconds": 0.0, "ratio": None, "data": data_name, "torch": torch.__version__, "cpu_count": os.cpu_count(),
           "note": "timings on a shared machine are noisy; reference runs one image at a time on one thread"})
    if not args.skip_single:
        bench_single(names, x32, args.severity, device, args.threads, args.skip_reference, warmup=True)
        if args.protocol == "imagenet-c":  # cifar-c is defined for 32x32 images only
            bench_single(names, x224, args.severity, device, args.threads, args.skip_reference, warmup=True)
    if args.grid_n > 0:
        bench_grid(names, images[: args.grid_n], data_name if args.grid_n == images.shape[0] else f"{data_name}[:{args.grid_n}]", device, args.threads, args.skip_reference, args.grid_batch, args.grid_ref_n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
