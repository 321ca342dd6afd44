"""FX graph mode (legacy) vs PT2E (torchao, lowered to oneDNN) int8-static on one model: accuracy vs the
float base, CPU latency per image, variant file size, time to build the integer model.

    python scripts/bench_int8_stacks.py --model zoo:digits-cnn --data digits --calibration digits
    python scripts/bench_int8_stacks.py --model zoo:cifar10-resnet18 --data npz:../shared/data/cifar10_test_1000.npz \
        --calibration npz:../shared/data/cifar10_9000_jpeg.npz --n 100

Calibration: the first --calibration-n images of the calibration spec's train split (npz: the file),
identical for both stacks. Latency: median of --repeats forward passes of the integer model on the
whole batch of --n images (and on batches of 1), after one warm-up, in this process, same threads.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from robustlab.compress import pt2e
from robustlab.compress import quantize_fx as fx
from robustlab.compress.variant import save_variant
from robustlab.data import load_dataset
from robustlab.models import load_model
from robustlab.models.metadata import META_KEYS
from robustlab.runner import prepare_data


def _latency_ms(f: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    with torch.no_grad():
        f(x)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            f(x)
            times.append(time.perf_counter() - t)
    return 1000.0 * statistics.median(times) / x.shape[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--calibration", required=True)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--calibration-n", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    base = load_model(a.model)
    net = base.net.cpu().float().eval()
    test = prepare_data(base, load_dataset(a.data, split="test").limit(a.n))
    x, y = test.images(), test.y
    cal = prepare_data(base, load_dataset(a.calibration, split="train").limit(a.calibration_n))
    xc = base.normalise(cal.images())
    with torch.no_grad():
        base_pred = base(x).argmax(1)
    info = base.info.to_dict()
    meta = {k: info.get(k) for k in META_KEYS}
    out: dict[str, object] = {"model": a.model, "n": len(y), "threads": torch.get_num_threads(), "base_accuracy": float((base_pred == y).float().mean()),
                              "base_latency_ms": _latency_ms(base, x, a.repeats)}
    tmp = Path(tempfile.mkdtemp(prefix="bench-int8-"))
    for name, mod in (("fx", fx), ("pt2e", pt2e)):
        t0 = time.perf_counter()
        prepared = mod.prepare_fake_quant(net, base.input_shape)
        pt2e.calibrate(prepared, [xc[i:i + 64] for i in range(0, len(xc), 64)])
        mod.freeze(prepared)
        t_prep = time.perf_counter() - t0
        t0 = time.perf_counter()
        integer = fx.to_integer(prepared) if mod is fx else pt2e.to_integer(prepared, base.input_shape)
        t_int = time.perf_counter() - t0
        rec = {"method": "int8-static", "sparsity": None, "base_sha256": base.info.sha256, "calibration": None}
        if mod is pt2e:
            rec["stack"] = "pt2e"
        path = save_variant(prepared.state_dict(), tmp / f"{name}.safetensors", metadata=meta, compression=rec)
        xn = base.normalise(x)
        with torch.no_grad():
            pred = integer(xn).argmax(1)
        out[name] = {"accuracy": float((pred == y).float().mean()), "agreement_with_base": float((pred == base_pred).float().mean()),
                     "latency_ms_per_image_batch": _latency_ms(integer, xn, a.repeats), "latency_ms_batch1": _latency_ms(integer, xn[:1], a.repeats * 4),
                     "file_bytes": path.stat().st_size, "prepare_calibrate_s": round(t_prep, 2), "build_integer_s": round(t_int, 2)}
        if mod is pt2e:
            t0 = time.perf_counter()
            pt2e.to_integer(prepared, base.input_shape)
            out[name]["build_integer_cached_s"] = round(time.perf_counter() - t0, 4)  # type: ignore[index]
        print(name, json.dumps(out[name]), file=sys.stderr, flush=True)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
