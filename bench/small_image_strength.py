"""How much of a corruption's strength survives the small-image schemes of
:mod:`robustlab.corruptions.protocol` (issue 12 item 1: measured and stated).

For spatial corruptions of small images the protocols corrupt a larger working canvas (imagenet-c:
integer upsampling; cifar-c-small: integer blocks + reflect padding to 32x32) and map the result back
(crop, k x k block mean). Prints, per protocol, image size and corruption, the ratio

    retained = mean |back(y_work) - x| / mean |y_work - x_work|

at severity 3 on real images (CIFAR-10 test images area-downsampled to the size, or the digits):
the fraction of the mean absolute perturbation that reaches the small image. 1.0 means the scheme
loses nothing; per-pixel corruptions run at native size and are 1.0 by construction.

Usage: python bench/small_image_strength.py [--n 64] [--severity 3]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from robustlab.corruptions.engine import corruption_seeds
from robustlab.corruptions.protocol import POINTWISE, Protocol, from_working, to_working
from robustlab.corruptions.registry import ALL, FAST_CIFAR_C, FAST_CORRUPTIONS


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_test_1000.npz"))
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--severity", type=int, default=3)
    args = ap.parse_args(argv)
    x32 = torch.from_numpy(np.load(args.data)["x"][: args.n]).permute(0, 3, 1, 2).float() / 255
    for proto, reg in ((Protocol.IMAGENET_C, FAST_CORRUPTIONS), (Protocol.CIFAR_C_SMALL, FAST_CIFAR_C)):
        for side in (8, 28):
            x = F.interpolate(x32, size=(side, side), mode="area")
            for name in ALL:
                if name in POINTWISE:
                    continue
                work, geom = to_working(x, name, proto)
                seeds = corruption_seeds(0, name, args.severity, [str(i) for i in range(x.shape[0])])
                yw = reg.get(name)(work, args.severity, seeds)
                on_canvas = float((yw - work).abs().mean())
                back = float((from_working(yw, name, geom) - x).abs().mean())
                print(json.dumps({"protocol": proto.value, "size": side, "corruption": name, "severity": args.severity,
                                  "canvas": list(work.shape[-2:]), "mean_abs_pert_canvas": round(on_canvas, 4),
                                  "mean_abs_pert_back": round(back, 4), "retained": round(back / on_canvas, 3) if on_canvas else None}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
