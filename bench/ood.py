"""Benchmark robustlab's OOD detectors against a plain forward pass and against pytorch-ood.

Prints one JSON line per measurement: ``task, impl, reference, device, n, seconds, ratio`` plus
``forward_passes`` (cost in plain forward passes of the same images), ``images_per_second`` and
fidelity figures against pytorch-ood (Spearman correlation of the scores, AUROC of ours and theirs on
ID vs uniform noise). ``ratio`` is robustlab's time over pytorch-ood's time (None without it).
The Mahalanobis fit line counts the images the model saw during fitting (``fit_passes``).

    python bench/ood.py --quick                       # digits model, tiny budget (used by a test)
    python bench/ood.py --model zoo:cifar10-resnet18  # real CIFAR-10 ResNet-18 + shared images
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from robustlab.data import load_dataset
from robustlab.models import load_model
from robustlab.ood import DETECTORS, create_detector, ood_metrics
from robustlab.ood.sources import synthetic_images

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time(fn: Callable[[], Any], device: torch.device, repeat: int) -> tuple[float, Any]:
    fn()  # warm-up
    best, out = float("inf"), None
    for _ in range(repeat):
        _sync(device)
        t = time.perf_counter()
        out = fn()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best, out


def _batched(score: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, bs: int) -> torch.Tensor:
    return torch.cat([score(x[i : i + bs]).detach().float().cpu() for i in range(0, x.shape[0], bs)])


def _reference(name: str, model: Any, fit: tuple[torch.Tensor, torch.Tensor], eps: float) -> Callable[[torch.Tensor], torch.Tensor] | None:
    try:
        import pytorch_ood.detector as P
    except ImportError:
        return None
    feats = model.features
    if name == "msp":
        return P.MaxSoftmax(model)
    if name == "maxlogit":
        return P.MaxLogit(model)
    if name == "energy":
        return P.EnergyBased(model)
    if name == "odin":
        return P.ODIN(model, eps=eps, temperature=1000.0)
    with torch.no_grad():
        z = torch.cat([feats(fit[0][i : i + 256]) for i in range(0, fit[0].shape[0], 256)])
    y = fit[1].to(z.device)
    if name == "mahalanobis":
        return (P.MahalanobisODIN(feats, eps=eps) if eps else P.Mahalanobis(feats)).fit_features(z, y)
    if name == "knn":
        return P.KNN(feats, k=50).fit_features(z.cpu(), y.cpu())
    if name == "vim":
        from robustlab.ood.vim import default_dim, last_linear

        head = last_linear(model)
        return P.ViM(feats, d=default_dim(z.shape[1]), w=head.weight, b=head.bias).fit_features(z, y)
    return None


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny budget (digits model, few images)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default=None, help="model spec (default: zoo:digits-cnn with --quick, else zoo:cifar10-resnet18)")
    ap.add_argument("--n", type=int, default=None, help="images to score")
    ap.add_argument("--n-fit", type=int, default=None, help="fit images")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--detectors", default=",".join(DETECTORS.names()))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    spec = a.model or ("zoo:digits-cnn" if a.quick else "zoo:cifar10-resnet18")
    n = a.n or (64 if a.quick else 1000)
    n_fit = a.n_fit or (256 if a.quick else 9000)
    repeat = a.repeat or (1 if a.quick else 3)
    model = load_model(spec, device=str(device))
    shape = tuple(model.input_shape)

    if "cifar" in spec and (SHARED / "cifar10_test_1000.npz").is_file():
        test = load_dataset(f"npz:{SHARED / 'cifar10_test_1000.npz'}")
        train = load_dataset(f"npz:{SHARED / 'cifar10_9000_jpeg.npz'}")
    elif "cifar" in spec:
        test = train = load_dataset("samples:cifar10")
    else:
        test, train = load_dataset("digits", split="test"), load_dataset("digits", split="train")
    lo, hi = model.bounds
    x = (test.images()[:n] * (hi - lo) + lo).to(device)
    n = x.shape[0]
    perm = np.random.default_rng(0).permutation(len(train))[:n_fit]
    fit_x = (train.images(sorted(perm.tolist())) * (hi - lo) + lo).to(device)
    fit_y = train.y[sorted(perm.tolist())].to(device)
    noise = (synthetic_images("noise:uniform", n=n, shape=shape, seed=0) * (hi - lo) + lo).to(device)
    common = {"device": str(device), "model": spec, "n": n, "batch_size": a.batch_size, "threads": a.threads}

    with torch.no_grad():
        t_fwd, _ = _time(lambda: _batched(model, x, a.batch_size), device, repeat)
    print(json.dumps({"task": "ood/forward", "impl": "robustlab", "reference": None, **common, "seconds": t_fwd, "ratio": None, "forward_passes": 1.0, "images_per_second": n / t_fwd}), flush=True)

    eps = 0.0014
    for name in a.detectors.split(","):
        kw: dict[str, Any] = {"odin": {"temperature": 1000.0, "eps": eps}, "mahalanobis": {"eps": eps}}.get(name, {})
        det = create_detector(name, **kw)
        if det.requires_fit:
            seen = {"n": 0}
            h = model.net.register_forward_pre_hook(lambda _m, args: seen.__setitem__("n", seen["n"] + args[0].shape[0]))
            try:
                t_fit, _ = _time(lambda: det.fit(model, (fit_x, fit_y), batch_size=a.batch_size), device, 1)
            finally:
                h.remove()
            passes = seen["n"] / fit_x.shape[0] / 2  # _time runs fit twice (warm-up + timed)
            ref_fit = None
            if name == "mahalanobis":
                try:
                    import pytorch_ood.detector as P
                    from torch.utils.data import DataLoader, TensorDataset

                    ref = P.Mahalanobis(model.features)
                    ref.to(device)
                    loader = DataLoader(TensorDataset(fit_x, fit_y), batch_size=a.batch_size)
                    ref_fit, _ = _time(lambda: ref.fit(loader), device, 1)
                except ImportError:
                    ref_fit = None
            print(json.dumps({"task": f"ood/fit/{name}", "impl": "robustlab", "reference": "pytorch-ood" if ref_fit else None, **common, "n": fit_x.shape[0],
                              "seconds": t_fit, "ratio": (t_fit / ref_fit) if ref_fit else None, "fit_passes": passes}), flush=True)
        t, s_id = _time(lambda: _batched(lambda b: det.score(model, b), x, a.batch_size), device, repeat)
        s_ood = _batched(lambda b: det.score(model, b), noise, a.batch_size)
        row: dict[str, Any] = {"task": f"ood/score/{name}", "impl": "robustlab", **common, "seconds": t, "forward_passes": t / t_fwd,
                               "images_per_second": n / t, "config": det.config(), "auroc_id_vs_uniform_noise": ood_metrics(s_id.numpy(), s_ood.numpy()).auroc}
        ref = _reference(name, model, (fit_x, fit_y), eps)
        if ref is not None:
            t_ref, r_id = _time(lambda: _batched(ref, x, a.batch_size), device, repeat)
            r_ood = _batched(ref, noise, a.batch_size)
            row.update({"reference": "pytorch-ood", "ratio": t / t_ref, "reference_seconds": t_ref, "reference_forward_passes": t_ref / t_fwd,
                        "spearman_vs_reference": _spearman(s_id.numpy(), r_id.numpy()),
                        "reference_auroc_id_vs_uniform_noise": ood_metrics(r_id.double().numpy(), r_ood.double().numpy()).auroc})
        else:
            row.update({"reference": None, "ratio": None})
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
