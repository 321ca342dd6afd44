"""Benchmark: cost per row of a Square candidate through LocalForward against the model's full forward pass.

Candidates that change one square of a point's best are evaluated both ways, at each square size a
Square run uses late on images of that size (AutoAttack's schedule: 1/16 of the pixels down to 1/512),
in batches of ``--rows``. Prints one JSON line per size: milliseconds per row each way (best of
``--reps``), their ratio, the share of the convolutions' multiply-adds the local path skips, and the
largest relative difference of the logits. Speed does not depend on the weights, so ``--torchvision
ARCH`` builds a torchvision architecture with random weights (nothing is downloaded) at ``--size``
pixels; otherwise ``--model`` is any model spec.

Examples:
    python bench/local_forward_rows.py --model ROBUST.safetensors
    python bench/local_forward_rows.py --torchvision resnet50 --size 224
"""

from __future__ import annotations

import argparse
import json
import math
import time

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="zoo:cifar10-resnet18")
    ap.add_argument("--torchvision", default=None, help="a torchvision architecture with random weights instead of --model")
    ap.add_argument("--size", type=int, default=224, help="image side for --torchvision")
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--points", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from robustlab.attacks.square_local import local_forward_for
    from robustlab.attacks.square import p_selection
    from robustlab.fastpaths import folded_view
    from robustlab.models import load_model
    from robustlab.models.wrapper import ModelInfo, RobustModel

    torch.manual_seed(args.seed)
    if args.torchvision:
        import torchvision

        net = getattr(torchvision.models, args.torchvision)(weights=None).eval()
        info = ModelInfo(spec=f"torchvision:{args.torchvision}", format="torchvision", num_classes=1000, input_shape=(3, args.size, args.size),
                         mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
        model = RobustModel(net, info)
        name = f"torchvision:{args.torchvision} (random weights)"
    else:
        model = load_model(args.model, device="cpu")
        name = args.model
    c, h, w = model.input_shape or (3, 32, 32)
    view = folded_view(model) or model
    g = torch.Generator().manual_seed(args.seed)
    best = torch.rand(args.points, c, h, w, generator=g)
    with torch.no_grad():
        view(best)
        view(torch.rand(max(args.rows, 16), c, h, w, generator=g))  # the view's first-call checks, outside the timing
    lf = local_forward_for(view)
    if lf is None:
        print(json.dumps({"task": "local_forward_rows", "model": name, "skipped": "the network does not trace"}))
        return
    lf.set_base(best)
    sizes = sorted({min(max(int(round(math.sqrt(p_selection(it, 0.8) * h * w))), 1), min(h, w)) for it in (600, 1500, 3000, 5000, 7000, 9000)},
                   reverse=True)
    for s in sizes:
        if 16 * s * s > h * w:
            continue
        pts = torch.randint(0, args.points, (args.rows,), generator=g)
        top = torch.randint(0, h - s + 1, (args.rows,), generator=g).tolist()
        left = torch.randint(0, w - s + 1, (args.rows,), generator=g).tolist()
        crop = torch.rand(args.rows, c, s, s, generator=g)
        x = best[pts].clone()
        for i, (t, l) in enumerate(zip(top, left)):
            x[i, :, t : t + s, l : l + s] = crop[i]
        saved = lf.saving(s)
        with torch.no_grad():
            full, local = view(x), lf.logits(pts, top, left, crop)
            diff = float(((full - local).abs() / (1 + full.abs())).max())
            t_full = t_local = math.inf
            for _ in range(args.reps):  # interleaved, best of reps
                t0 = time.perf_counter()
                view(x)
                t_full = min(t_full, time.perf_counter() - t0)
                t0 = time.perf_counter()
                lf.logits(pts, top, left, crop)
                t_local = min(t_local, time.perf_counter() - t0)
        print(json.dumps({"task": "local_forward_rows", "model": name, "image": [c, h, w], "square": s, "rows": args.rows, "threads": args.threads,
                          "full_ms_per_row": round(1000 * t_full / args.rows, 2), "local_ms_per_row": round(1000 * t_local / args.rows, 2),
                          "ratio": round(t_local / t_full, 3), "multiply_adds_saved": round(saved, 3), "max_rel_logit_diff": diff}), flush=True)


if __name__ == "__main__":
    main()
