"""Benchmark: Square's local evaluation of late candidates against the full forward pass, on the points AutoAttack leaves to Square.

From the iteration where Square's squares cover at most 1/16 of the image, a candidate's logits can be
computed from cached maps of its point's best, recomputing each convolution only on the box the changed
square reaches (``robustlab/attacks/local_forward.py``). "local" is the default, "full" passes
``local_eval=False``. Same process, interleaved A/B repetitions (this machine's speed drifts by 10-30%
between minutes). Prints one JSON line per Square run (seconds, rows evaluated locally, forward passes
of the model) and a summary with the ratio of the medians, the multiply-adds saved per local row at each
square size, and whether both sides gave the same points bit for bit.

Example:
    python bench/square_local.py --model ROBUST.safetensors --n 32 --reps 2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from common import QUICK_ITERATIONS, add_cifar_args, cifar_points, survivors


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_cifar_args(ap)
    ap.add_argument("--reps", type=int, default=2, help="interleaved A/B repetitions")
    ap.add_argument("--queries", type=int, default=5000)
    ap.add_argument("--quick", action="store_true", help="4 attack iterations before Square, 700 queries (end-to-end test)")
    ap.add_argument("--torchvision", default=None, help="a torchvision architecture with random weights (nothing downloaded), attacked on --n "
                    "random images of --size pixels labelled with its own predictions, without the APGD and FAB members before (speed only)")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--min-saving", type=float, default=None, help="use the local path from this share of multiply-adds saved on "
                    "(default: robustlab's own, LocalMargins.MIN_SAVING)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from robustlab.attacks.local_forward import LocalForward
    from robustlab.attacks.square import square_linf
    from robustlab.attacks.square_local import LocalMargins
    from robustlab.fastpaths import folded_view

    if args.min_saving is not None:
        LocalMargins.MIN_SAVING = args.min_saving

    if args.torchvision:
        model, xs, ys, eps = _torchvision_points(args)
        idx = torch.arange(len(ys))
        view = folded_view(model) or model
    else:
        loaded = cifar_points(args, "square_local")
        if loaded is None:
            return
        model, x, y, eps = loaded
        view = folded_view(model) or model
        idx, xs, ys = survivors(model, x, y, eps, attacks=["apgd-ce", "apgd-t", "fab-t"], n_iter=QUICK_ITERATIONS if args.quick else 100, batch_size=128,
                                view=view)
    queries = 700 if args.quick else args.queries
    counts = {"local_rows": 0, "forward_passes": 0}
    savings: dict[int, float] = {}
    real_logits, real_saving = LocalForward.logits, LocalForward.saving

    def logits(self: LocalForward, points: torch.Tensor, *a: object) -> torch.Tensor:
        counts["local_rows"] += int(points.numel())
        return real_logits(self, points, *a)  # type: ignore[arg-type]

    def saving(self: LocalForward, size: int) -> float:
        had = size in self._saving
        out = real_saving(self, size)
        if not had:
            counts["local_rows"] -= 1  # the measurement's own row
        savings[size] = out
        return out

    LocalForward.logits, LocalForward.saving = logits, saving  # type: ignore[method-assign]
    hook = view.register_forward_hook(lambda *_: counts.__setitem__("forward_passes", counts["forward_passes"] + 1))
    totals: dict[str, list[float]] = {"local": [], "full": []}
    outs: dict[str, torch.Tensor] = {}
    for rep in range(args.reps):
        for name in (("local", "full") if rep % 2 == 0 else ("full", "local")):
            counts.update(local_rows=0, forward_passes=0)
            t0 = time.perf_counter()
            out = square_linf(view, xs, ys, eps, n_queries=queries, seed=0, local_eval=name == "local")
            sec = time.perf_counter() - t0
            totals[name].append(sec)
            outs.setdefault(name, out)
            with torch.no_grad():
                robust = int(model(out).argmax(1).eq(ys).sum()) if len(ys) else 0
            print(json.dumps({"task": "square_local/run", "model": args.torchvision and f"torchvision:{args.torchvision} (random weights)" or args.model, "rep": rep, "evaluation": name, "points": int(idx.numel()),
                              "queries": queries, "seconds": round(sec, 2), "local_rows": counts["local_rows"],
                              "forward_passes": counts["forward_passes"], "robust": robust}), flush=True)
    hook.remove()
    mf, ml = statistics.median(totals["full"]), statistics.median(totals["local"])
    print(json.dumps({"task": "square_local/ratio", "model": args.torchvision and f"torchvision:{args.torchvision} (random weights)" or args.model, "points": int(idx.numel()), "threads": args.threads, "queries": queries,
                      "full_seconds_median": round(mf, 2), "local_seconds_median": round(ml, 2), "ratio": round(mf / ml, 3) if ml else None,
                      "multiply_adds_saved_by_square_size": {str(k): round(v, 3) for k, v in sorted(savings.items())},
                      "min_saving": LocalMargins.MIN_SAVING,
                      "same_points": bool(torch.equal(outs["full"], outs["local"]))}), flush=True)


def _torchvision_points(args: argparse.Namespace) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, float]:
    import torchvision

    from robustlab.models.wrapper import ModelInfo, RobustModel
    from robustlab.parsing import parse_fraction

    torch.manual_seed(0)
    net = getattr(torchvision.models, args.torchvision)(weights=None).eval()
    info = ModelInfo(spec=f"torchvision:{args.torchvision}", format="torchvision", num_classes=1000, input_shape=(3, args.size, args.size),
                     mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    model = RobustModel(net, info)
    x = torch.rand(args.n, 3, args.size, args.size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y, parse_fraction(args.eps)


if __name__ == "__main__":
    main()
