"""Reproduce ``zoo:digits-cnn``: train the small CNN on the digits training split.

Usage: ``python scripts/train_digits_cnn.py [--out robustlab/models/zoo/digits-cnn.safetensors]``.
Deterministic (seed 0, one thread); about 20 s on 2 CPU cores. Prints train/val/test accuracy.
"""

from __future__ import annotations

import argparse
import logging

import torch
import torch.nn.functional as F

from robustlab.data import load_dataset
from robustlab.models.architectures import DigitsCNN
from robustlab.models.save import save_model

log = logging.getLogger("train_digits_cnn")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="robustlab/models/zoo/digits-cnn.safetensors")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)  # scripts may seed globally; library code never does
    tr, va, te = (load_dataset("digits", split=s) for s in ("train", "val", "test"))
    x, y = tr.images(), tr.y
    net = DigitsCNN()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.epochs)
    g = torch.Generator().manual_seed(args.seed)
    for ep in range(args.epochs):
        net.train()
        perm = torch.randperm(len(y), generator=g)
        for i in range(0, len(y), 64):
            idx = perm[i : i + 64]
            xb = x[idx]
            # light augmentation: one-pixel shifts
            sh = torch.randint(-1, 2, (2,), generator=g).tolist()
            xb = torch.roll(xb, shifts=sh, dims=(2, 3))
            loss = F.cross_entropy(net(xb), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    net.eval()
    with torch.no_grad():
        accs = {s.split: float((net(s.images()).argmax(1) == s.y).float().mean()) for s in (tr, va, te)}
    log.info("accuracy: %s", accs)
    save_model(net, args.out, architecture="zoo-arch:digits-cnn", metadata={
        "num_classes": 10, "input_shape": [1, 8, 8], "bounds": [0.0, 1.0], "class_names": [str(i) for i in range(10)],
        "dataset": "digits", "trained_by": "scripts/train_digits_cnn.py", "seed": args.seed, "epochs": args.epochs,
        "accuracy": accs,
    })
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
