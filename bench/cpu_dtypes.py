"""Benchmark: what a forward pass and an input gradient cost per row on this CPU in each arithmetic.

For a model and several batch sizes, prints one JSON line per (arithmetic, pass, rows) with the
milliseconds per row (best of ``--reps`` blocks of ``--calls`` calls, the machine's noise being what
it is) and the ratio to fp32 at the same rows:

* ``fp32``: the attack view ``robustlab evaluate`` iterates on by default (the batch-norm-folded copy);
* ``bf16-autocast``: the same view under bf16 autocast (``evaluate --precision bf16``);
* ``bf16-weights`` / ``fp16-weights``: the network in that dtype on inputs in that dtype (what a ``robustlab compress``
  variant runs).

Every line records ``cpu_native_bf16`` (bf16 in hardware: AVX-512 BF16 or AMX) and the CPU kernels torch
chose (``cpu_capability``), the two things the answer depends on.

    python bench/cpu_dtypes.py --model runs/robust.safetensors --rows 2 8 27
"""

from __future__ import annotations

import argparse
import copy
import json

from robustlab.memory import bound_heap_growth

HEAP = bound_heap_growth()  # the C heap as `robustlab` commands set it, before torch loads

import torch  # noqa: E402
from torch import nn  # noqa: E402

from common import forward_call, gradient_call, per_row_ms  # noqa: E402

ARITHMETICS = ("fp32", "bf16-autocast", "bf16-weights", "fp16-weights")


def _views(model: nn.Module, names: list[str]) -> dict[str, tuple[nn.Module, torch.dtype]]:
    from robustlab.fastpaths import AutocastView, folded_view

    folded = folded_view(model)  # type: ignore[arg-type]
    base: nn.Module = folded if folded is not None else model
    out: dict[str, tuple[nn.Module, torch.dtype]] = {}
    for name in names:
        if name == "fp32":
            out[name] = (base, torch.float32)
        elif name == "bf16-autocast":
            out[name] = (AutocastView(base), torch.float32)  # type: ignore[arg-type]
        else:
            dtype = torch.bfloat16 if name.startswith("bf16") else torch.float16
            net = copy.deepcopy(getattr(model, "net", model)).to(dtype)
            out[name] = (net, dtype)
    for m, _ in out.values():
        for p in m.parameters():
            p.requires_grad_(False)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="zoo:cifar10-resnet18")
    ap.add_argument("--rows", type=int, nargs="+", default=[2, 8, 27])
    ap.add_argument("--arithmetics", nargs="+", choices=ARITHMETICS, default=list(ARITHMETICS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from robustlab.fastpaths import cpu_native_bf16
    from robustlab.models import load_model

    model = load_model(args.model, device="cpu")
    names = ["fp32"] + [a for a in args.arithmetics if a != "fp32"]  # fp32 first: every ratio is against it
    views = _views(model, names)
    shape = tuple(model.input_shape) if model.input_shape is not None else (3, 32, 32)
    g = torch.Generator().manual_seed(0)
    for rows in args.rows:
        x = torch.rand((rows, *shape), generator=g)
        fp32: dict[str, float] = {}
        for name in names:
            m, dtype = views[name]
            xd = x.to(dtype)
            for kind, fn in (("forward", forward_call(m, xd)), ("input_gradient", gradient_call(m, xd))):
                # best of --reps blocks of --calls calls (each block after one warm-up call)
                ms = min(per_row_ms(fn, rows, args.calls) for _ in range(args.reps))
                if name == "fp32":
                    fp32[kind] = ms
                print(json.dumps({
                    "task": f"cpu_dtypes/{kind}", "impl": name, "reference": "fp32", "device": "cpu", "model": args.model, "rows": rows,
                    "threads": args.threads, "ms_per_row": round(ms, 3), "ratio_to_fp32": round(ms / fp32[kind], 3),
                    "cpu_native_bf16": cpu_native_bf16(), "cpu_capability": torch.backends.cpu.get_cpu_capability(), "heap": HEAP,
                }), flush=True)


if __name__ == "__main__":
    main()
