"""One benchmark script for a GPU machine (finishes in under 8 minutes on one H100).

1. The ceiling: ResNet-18 (CIFAR) forward and input-gradient throughput, images/s, fp32 and bf16,
   channels-last.
2. robustlab's AutoAttack check against ``pyautoattack`` on the same model and data
   (``bench/attacks.py``: time ratio and robust-accuracy difference).
3. The corruption grid, fast backend against the reference (``bench/corruptions.py``).
4. OOD detectors (``bench/ood.py``).
5. Certification (``bench/certify.py``), n = 100,000 on the ResNet-18.
6. Adaptive certification against fixed n = 100,000 (``bench/certify_adaptive.py``): seconds per
   image and forward passes, certified accuracy of both.
7. AutoAttack and MALT on an adversarially trained ResNet-18 (``--robust-model``, default the
   ``robustlab defend --method fast-at`` checkpoint under /work/models when present).

Budgets add up to about 12 minutes at most (each part is cut at its budget; the robust-model
AutoAttack runs on 500 of the 1000 images).

Every line printed is one JSON measurement. Each part runs as a subprocess with its own time budget,
so one slow or failing part cannot take the others down (a failure prints a JSON line with
``"error"``). ``--quick --device cpu`` runs everything end to end with tiny budgets (tested).

    python bench/gpu.py --device cuda --data ../shared/data/cifar10_test_1000.npz
    python bench/gpu.py --quick --device cpu
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def emit(**kw: object) -> None:
    print(json.dumps(kw), flush=True)


def throughput(device: str, batch: int, iters: int) -> None:
    import torch

    from robustlab.models import load_model

    model = load_model("zoo:cifar10-resnet18", device=device)
    dev = torch.device(device)
    x = torch.rand(batch, 3, 32, 32, device=dev)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for fmt in ("contiguous", "channels_last"):
        if fmt == "channels_last":
            model.net = model.net.to(memory_format=torch.channels_last)
            x = x.contiguous(memory_format=torch.channels_last)
        for dtype in ("fp32", "bf16"):
            if dtype == "bf16" and dev.type == "cpu":
                continue
            ctx = torch.autocast(device_type=dev.type, dtype=torch.bfloat16) if dtype == "bf16" else torch.autocast(device_type=dev.type, enabled=False)
            for mode in ("forward", "input_gradient"):
                def step() -> None:
                    with ctx:
                        if mode == "forward":
                            with torch.no_grad():
                                model(x)
                        else:
                            xa = x.detach().requires_grad_(True)
                            loss = torch.nn.functional.cross_entropy(model(xa).float(), torch.zeros(batch, dtype=torch.long, device=dev))
                            torch.autograd.grad(loss, xa)

                step()
                sync()
                t = time.perf_counter()
                for _ in range(iters):
                    step()
                sync()
                sec = time.perf_counter() - t
                emit(task=f"resnet18_{mode}", impl="robustlab.RobustModel", reference="ceiling", device=device, n=batch * iters,
                     seconds=round(sec, 4), images_per_second=round(batch * iters / sec, 1), dtype=dtype, memory_format=fmt)


def run_part(name: str, args: list[str], budget: int) -> None:
    t = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, str(HERE / args[0]), *args[1:]], capture_output=True, text=True, timeout=budget)
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        for line in out.splitlines():
            if line.startswith("{"):
                print(line, flush=True)
        emit(task=name, error=f"time budget of {budget} s exceeded", seconds=round(time.perf_counter() - t, 1))
        return
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            print(line, flush=True)
    if proc.returncode != 0:
        emit(task=name, error=(proc.stderr.strip().splitlines() or ["failed"])[-1][:300], returncode=proc.returncode)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny budgets (CPU end-to-end test)")
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data" / "cifar10_test_1000.npz"), help="the 1000 real CIFAR-10 images (npz)")
    ap.add_argument("--parts", default="throughput,attacks,attacks_robust,corruptions,ood,certify,certify_adaptive")
    ap.add_argument("--robust-model", default="/work/models/cifar10_resnet18_fastat.safetensors", help="adversarially trained CIFAR-10 model spec")
    a = ap.parse_args()
    parts = set(a.parts.split(","))
    quick = ["--quick"] if a.quick else []
    have_data = Path(a.data).is_file()
    emit(task="gpu_bench", device=a.device, quick=a.quick, shared_data=have_data, started=time.strftime("%Y-%m-%dT%H:%M:%S"))
    if "throughput" in parts:
        throughput(a.device, 8 if a.quick else 512, 2 if a.quick else 20)
    if "attacks" in parts:
        extra = [] if a.quick or not have_data else ["--skip-digits", "--cifar-n", "1000"]
        run_part("attacks", ["attacks.py", "--device", a.device, *quick, *extra], 180 if a.quick else 150)
    if "attacks_robust" in parts:
        if a.quick:  # a ResNet-18 AutoAttack does not fit the CPU test's budget; the path is bench/attacks.py --cifar-model
            emit(task="attacks_robust", skipped="--quick: not run on the CPU")
        elif (a.robust_model.startswith("zoo:") or Path(a.robust_model.split(":", 1)[-1]).is_file()) and have_data:
            extra = ["--skip-digits", "--skip-pgd", "--cifar-model", a.robust_model, "--cifar-n", "500"]
            run_part("attacks_robust", ["attacks.py", "--device", a.device, *extra], 200)
        else:
            emit(task="attacks_robust", skipped=f"no adversarially trained model at {a.robust_model} or no CIFAR data")
    if "corruptions" in parts:
        extra = ["--grid-n", "0", "--n32", "16", "--n224", "2"] if a.quick else ["--skip-reference", "--grid-n", "1000", "--grid-batch", "1000", "--n32", "1000", "--n224", "64"]
        run_part("corruptions", ["corruptions.py", "--device", a.device, *quick, *extra], 120 if a.quick else 60)
    if "ood" in parts:
        run_part("ood", ["ood.py", "--device", a.device, *quick], 120 if a.quick else 40)
    if "certify" in parts:
        extra = [] if a.quick else ["--model", "zoo:cifar10-resnet18", "--n", "100000", "--points", "3", "--batch", "1000", "--our-batch", "10000"] + (["--data", f"npz:{a.data}"] if have_data else [])
        run_part("certify", ["certify.py", "--device", a.device, *quick, *extra], 120 if a.quick else 100)
    if "certify_adaptive" in parts:
        extra = [] if a.quick else ["--model", "zoo:cifar10-resnet18", "--n", "100000", "--points", "8", "--chunk", "8", "--batch", "10000", "--sigmas", "0.25"] + (["--data", f"npz:{a.data}"] if have_data else [])
        run_part("certify_adaptive", ["certify_adaptive.py", "--device", a.device, *quick, *extra], 120 if a.quick else 60)
    emit(task="gpu_bench", finished=time.strftime("%Y-%m-%dT%H:%M:%S"))


if __name__ == "__main__":
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    main()
