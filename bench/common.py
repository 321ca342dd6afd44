"""What the CPU attack benches share: their default data (the shared 1000 real CIFAR-10 test images beside
the checkout), their common arguments, and the cost per row of a forward pass or an input gradient."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Callable

import torch


def cifar_test_spec(task: str) -> str | None:
    """``npz:`` spec of ``../shared/data/cifar10_test_1000.npz`` (or ``$ROBUSTLAB_SHARED_DATA``), or None
    after printing a ``skipped`` JSON line for ``task`` when the file is not there."""
    shared = Path(os.environ.get("ROBUSTLAB_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    npz = shared / "cifar10_test_1000.npz"
    if not npz.is_file():
        print(json.dumps({"task": task, "skipped": f"{npz} not found; set ROBUSTLAB_SHARED_DATA or pass --data"}))
        return None
    return f"npz:{npz}"


#: attack iterations per member in a bench's ``--quick`` mode (an end-to-end test of the bench, not a measurement)
QUICK_ITERATIONS = 4


def add_cifar_args(ap: argparse.ArgumentParser) -> None:
    """--model, --data, --eps, --n, --threads with the CIFAR benches' defaults."""
    ap.add_argument("--model", default="zoo:cifar10-resnet18")
    ap.add_argument("--data", default=None, help="data spec (default: the shared 1000 CIFAR-10 test images)")
    ap.add_argument("--eps", default="8/255")
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)


def per_row_ms(fn: Callable[[], object], rows: int, reps: int) -> float:
    """Milliseconds per row of ``fn`` (one pass over ``rows`` rows): one warm-up call, then the mean of ``reps``."""
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps / rows * 1000.0


def gradient_call(m: torch.nn.Module, xb: torch.Tensor) -> Callable[[], object]:
    """One input gradient of ``m`` on ``xb`` (of the log-sum-exp of the logits) per call."""
    def f() -> object:
        xx = xb.clone().requires_grad_(True)
        return torch.autograd.grad(m(xx).logsumexp(1).sum(), xx)[0]
    return f


def forward_call(m: torch.nn.Module, xb: torch.Tensor) -> Callable[[], object]:
    """One forward pass of ``m`` on ``xb`` without autograd per call."""
    def f() -> object:
        with torch.no_grad():
            return m(xb)
    return f


def cifar_points(args: argparse.Namespace, task: str) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor, float] | None:
    """The model (on the CPU), the first ``--n`` test images and labels of ``--data`` (default: the shared
    CIFAR-10 test images) and ``--eps`` as a number; None after printing a ``skipped`` line for ``task``
    when the default data is not there."""
    from robustlab.data import load_dataset
    from robustlab.models import load_model
    from robustlab.parsing import parse_fraction

    data = args.data or cifar_test_spec(task)
    if data is None:
        return None
    model = load_model(args.model, device="cpu")
    d = load_dataset(data, split="test")
    n = min(args.n, len(d))
    return model, d.images(slice(0, n)), d.y[:n], parse_fraction(args.eps)


def survivors(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, attacks: list[str], n_iter: int, batch_size: int,
              view: torch.nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(indices, images, labels) of the points AutoAttack's ``attacks`` (fast engine, iterating on ``view``) leave robust:
    the work the later members, or the bench's A/B, run on."""
    from robustlab.attacks.autoattack import run_autoattack

    idx = run_autoattack(model, x, y, eps=eps, attacks=attacks, batch_size=batch_size, n_iter=n_iter, attack_model=view).robust.nonzero()[:, 0]
    return idx, x[idx], y[idx]
