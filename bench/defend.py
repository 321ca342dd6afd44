"""Benchmark: robustlab's defenses against plain reference loops, timed in the same run.

Prints one JSON line per measurement (task, impl, reference, device, n, seconds, ratio, fidelity):

* ``fast-at``: one or more epochs of robustlab's FGSM-RS training (``robustlab.defenses``, with
  per-sample seeding, checkpoints and validation switched to the minimum) vs the training loop of
  Wong et al.'s reference code (``locuslab/fast_adversarial``: uniform start, one signed step of
  1.25 eps, clamp, CE, cyclic lr), re-typed here in plain torch with the same data order and
  hyperparameters; ``ratio`` = reference seconds / robustlab seconds; fidelity = PGD-10 robust and
  clean accuracy of both models on the test split.
* ``augmix``: robustlab's batched AugMix (``augmix_ops.augmix``) vs the reference's per-image PIL
  ``augment_and_mix`` (google-research/augmix), re-typed here with PIL ImageOps; fidelity = the mean
  absolute pixel change each makes (both should be of the same size, not equal: the draws differ).

CPU (default): zoo:digits-cnn on digits. ``--device cuda``: also the zoo CIFAR-10 ResNet-18 on the
shared 9000 CIFAR-10 images (``--cifar``), if present. ``--quick``: tiny budgets (used by
tests/test_defend_bench.py).

    python bench/defend.py --epochs 2
    python bench/defend.py --quick
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


def _emit(**kw: Any) -> None:
    print(json.dumps(kw), flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _robust(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> tuple[float, float]:
    from robustlab.attacks.pgd import PGD

    xa = PGD(norm="linf", steps=10, rel_stepsize=0.25).perturb(model, x, y, eps)
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean()), float((model(xa).argmax(1) == y).float().mean())


def reference_fast_at(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, epochs: int, batch_size: int, lr: float, seed: int) -> None:
    """Wong et al.'s FGSM-RS loop (fast_adversarial/CIFAR10/train_fgsm.py), plain torch."""
    net = model.net  # type: ignore[attr-defined]
    for p in net.parameters():
        p.requires_grad_(True)
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    n = x.shape[0]
    total = epochs * ((n + batch_size - 1) // batch_size)
    step = 0
    g = torch.Generator().manual_seed(seed)
    alpha = 1.25 * eps
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = perm[i : i + batch_size]
            xb, yb = x[idx], y[idx]
            for grp in opt.param_groups:
                grp["lr"] = lr * (1 - abs(2 * step / total - 1))
            delta = (torch.rand(xb.shape, generator=g) * 2 - 1).to(xb) * eps
            delta = ((xb + delta).clamp(0, 1) - xb).requires_grad_(True)
            loss = F.cross_entropy(model(xb + delta), yb)
            grad = torch.autograd.grad(loss, delta)[0]
            delta = (delta + alpha * grad.sign()).clamp(-eps, eps)
            delta = ((xb + delta).clamp(0, 1) - xb).detach()
            net.train()
            out = F.cross_entropy(model(xb + delta), yb)
            opt.zero_grad()
            out.backward()
            opt.step()
            step += 1
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)


def bench_fast_at(args: argparse.Namespace, device: torch.device) -> None:
    from robustlab.data import load_dataset
    from robustlab.defenses.fast_at import FastAdversarialTraining, FastATParams
    from robustlab.defenses.trainer import TrainConfig, train
    from robustlab.models import load_model

    tr = load_dataset("digits", split="train").limit(args.train_n)
    te = load_dataset("digits", split="test")
    xt, yt = te.images().to(device), te.y.to(device)
    eps = 0.1
    cfg = TrainConfig(epochs=args.epochs, batch_size=64, lr=0.01, schedule="cyclic", val_limit=1, val_pgd_steps=1)

    m_ref = load_model("zoo:digits-cnn", device=str(device))
    _sync(device)
    t = time.perf_counter()
    reference_fast_at(m_ref, tr.images().to(device), tr.y.to(device), eps=eps, epochs=args.epochs, batch_size=64, lr=0.01, seed=0)
    _sync(device)
    t_ref = time.perf_counter() - t

    m_rl = load_model("zoo:digits-cnn", device=str(device))
    method = FastAdversarialTraining(FastATParams(eps=eps))
    with tempfile.TemporaryDirectory() as d:
        _sync(device)
        t = time.perf_counter()
        train(m_rl, method, tr, None, cfg, ckpt_dir=Path(d))
        _sync(device)
        t_rl = time.perf_counter() - t
    c_ref, r_ref = _robust(m_ref, xt, yt, eps)
    c_rl, r_rl = _robust(m_rl, xt, yt, eps)
    _emit(task="fast-at/digits", impl="robustlab.defenses fast-at", reference="locuslab/fast_adversarial loop (re-typed, plain torch)", device=str(device),
          n=len(tr), epochs=args.epochs, seconds=round(t_rl, 3), reference_seconds=round(t_ref, 3), ratio=round(t_ref / t_rl, 3),
          robust_accuracy=r_rl, reference_robust_accuracy=r_ref, clean_accuracy=c_rl, reference_clean_accuracy=c_ref)


def reference_augmix(img: Any, rng: np.random.Generator, *, severity: int = 3, width: int = 3, alpha: float = 1.0) -> np.ndarray:
    """google-research/augmix ``augment_and_mix`` (augmentations.py), PIL ops, per image."""
    from PIL import Image, ImageOps

    size = img.size[0]

    def lvl(maxval: float) -> float:
        return float(rng.uniform(0.1, severity)) * maxval / 10

    def sgn(v: float) -> float:
        return -v if rng.uniform() > 0.5 else v

    ops = [
        lambda im: ImageOps.autocontrast(im), lambda im: ImageOps.equalize(im), lambda im: ImageOps.posterize(im, 4 - int(lvl(4))),
        lambda im: im.rotate(sgn(int(lvl(30))), resample=Image.BILINEAR), lambda im: ImageOps.solarize(im, 256 - int(lvl(256))),
        lambda im: im.transform((size, size), Image.AFFINE, (1, sgn(lvl(0.3)), 0, 0, 1, 0), resample=Image.BILINEAR),
        lambda im: im.transform((size, size), Image.AFFINE, (1, 0, 0, sgn(lvl(0.3)), 1, 0), resample=Image.BILINEAR),
        lambda im: im.transform((size, size), Image.AFFINE, (1, 0, sgn(int(lvl(size / 3))), 0, 1, 0), resample=Image.BILINEAR),
        lambda im: im.transform((size, size), Image.AFFINE, (1, 0, 0, 0, 1, sgn(int(lvl(size / 3)))), resample=Image.BILINEAR),
    ]
    ws = rng.dirichlet([alpha] * width).astype(np.float32)
    m = np.float32(rng.beta(alpha, alpha))
    base = np.asarray(img).astype(np.float32) / 255
    mix = np.zeros_like(base)
    for i in range(width):
        aug = img.copy()
        for _ in range(int(rng.integers(1, 4))):
            aug = ops[int(rng.integers(0, len(ops)))](aug)
        mix += ws[i] * np.asarray(aug).astype(np.float32) / 255
    return (1 - m) * base + m * mix


def bench_augmix(args: argparse.Namespace, device: torch.device) -> None:
    from PIL import Image

    from robustlab.defenses.augmix_ops import augmix

    sets = [("digits", None)]
    cifar = Path(args.cifar)
    if cifar.is_file():
        sets.append(("cifar10", cifar))
    for name, path in sets:
        if path is None:
            from robustlab.data import load_dataset

            x = load_dataset("digits", split="train").images()[: args.augmix_n]
        else:
            x = torch.from_numpy(np.load(path)["x"][: args.augmix_n]).permute(0, 3, 1, 2).float() / 255
        x = x.to(device)
        n = x.shape[0]
        _sync(device)
        t = time.perf_counter()
        out = augmix(x, list(range(n)))
        _sync(device)
        t_rl = time.perf_counter() - t
        arr = (x.cpu().permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
        t = time.perf_counter()
        ref = []
        for i in range(n):
            a = arr[i] if arr.shape[3] == 3 else arr[i, :, :, 0]
            ref.append(reference_augmix(Image.fromarray(a), np.random.default_rng(i)))
        t_ref = time.perf_counter() - t
        ref_change = float(np.mean([np.abs(r.reshape(a.shape) - a.astype(np.float32) / 255).mean() for r, a in zip(ref, (arr[i] if arr.shape[3] == 3 else arr[i, :, :, 0] for i in range(n)))]))
        _emit(task=f"augmix/{name}", impl="robustlab.defenses.augmix_ops.augmix (batched torch)", reference="google-research/augmix augment_and_mix (re-typed, PIL per image)",
              device=str(device), n=n, seconds=round(t_rl, 4), reference_seconds=round(t_ref, 4), ratio=round(t_ref / t_rl, 3),
              mean_abs_change=float((out - x).abs().mean()), reference_mean_abs_change=ref_change)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--quick", action="store_true", help="tiny budgets (for the end-to-end test)")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train-n", type=int, default=1293)
    ap.add_argument("--augmix-n", type=int, default=512)
    ap.add_argument("--cifar", default=str(Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10_9000_jpeg.npz"))
    args = ap.parse_args()
    if args.quick:
        args.epochs, args.train_n, args.augmix_n = 1, 128, 16
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    device = torch.device(args.device)
    bench_fast_at(args, device)
    bench_augmix(args, device)


if __name__ == "__main__":
    main()
