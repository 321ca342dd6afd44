"""Benchmark: robustlab's adversarial attacks against the references, timed in the same run.

Prints one JSON line per measurement (task, impl, reference, device, n, seconds, ratio, fidelity):

* ``autoattack``: robustlab's AutoAttack (engine ``fast``) vs ``pyautoattack``'s
  ``run_standard_evaluation`` with the same seed and data; ``ratio`` = reference seconds /
  robustlab seconds; fidelity = robust accuracy of each and the number of points whose flags differ.
  ``--precisions fp32 bf16`` adds a line for ``evaluate --precision bf16`` (attack iterations under bf16
  autocast, every verdict fp32): its seconds, ``speedup_over_fp32`` and ``flag_disagreements_with_fp32``.
* ``malt``: robustlab's MALT on the same points: seconds against both AutoAttacks, and the number
  of points AutoAttack breaks that MALT misses (``autoattack_breaks_malt_misses``; goal 0).
* ``pgd``: robustlab's PGD (with and without early exit) vs foolbox's ``LinfPGD`` with the same
  steps / step size; fidelity = robust accuracy difference.

CPU (default): the zoo digits CNN on the digits test split. ``--device cuda``: also the zoo
CIFAR-10 ResNet-18 on the shared 1000 real CIFAR-10 test images (``--cifar-n``).
``--quick``: tiny budgets, used by tests/test_attacks_bench.py to run the script end to end.
The process's C heap is set as ``robustlab`` commands set it (``robustlab.memory.bound_heap_growth``, before
torch loads), so both engines run under it; the AutoAttack line records it (``heap``).

    python bench/attacks.py --n 100                 # CPU, digits, full AutoAttack budgets
    python bench/attacks.py --device cuda --cifar-n 1000
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from robustlab.memory import bound_heap_growth

#: the C heap as `robustlab` commands set it, before torch loads; both engines run under it (same process)
HEAP = bound_heap_growth()

import torch  # noqa: E402


#: robustlab's attack iterations run on the batch-norm-folded copy, as `evaluate` does (``--no-fold-bn`` turns it off)
FOLD_BN = True


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _emit(**kw: Any) -> None:
    print(json.dumps(kw, sort_keys=False), flush=True)


def bench_autoattack(model: Any, x: torch.Tensor, y: torch.Tensor, *, eps: float, device: torch.device, task: str, n_iter: int, queries: int, seed: int = 0, malt: bool = True,
                     precisions: tuple[str, ...] = ("fp32",)) -> None:
    from pyautoattack import AutoAttack

    from robustlab.attacks.autoattack import run_autoattack
    from robustlab.fastpaths import AutocastView, cpu_native_bf16, folded_view

    folded = folded_view(model) if FOLD_BN else None  # what `robustlab evaluate` iterates on (--no-fold-bn: the model)
    x, y = x.to(device).contiguous(), y.to(device)
    if device.type == "cuda":  # warm both: CUDA context, cuDNN algorithm choice, allocator (else the first timed one pays it)
        for _ in range(3):
            xw = x.detach().clone().requires_grad_(True)
            torch.autograd.grad(model(xw).logsumexp(1).sum(), xw)
    _sync(device)
    t0 = time.perf_counter()
    a = AutoAttack(model, eps=eps, norm="Linf", seed=seed, version="standard", device=device)
    a.logger.setLevel(logging.ERROR)
    if n_iter != 100:
        for at in (a.apgd, a.apgd_targeted):
            at.n_iter = n_iter
            at.n_iter_2, at.n_iter_min, at.size_decr = max(int(0.22 * n_iter), 1), max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)
        a.fab.n_iter = n_iter
    a.square.n_queries = queries
    xa, _ = a.run_standard_evaluation(x, y, batch_size=max(len(y), 1))
    with torch.no_grad():
        ref = model(xa).argmax(1).eq(y)
    _sync(device)
    t_ref = time.perf_counter() - t0
    n = len(y)
    fp32: tuple[torch.Tensor, float] | None = None
    for precision in precisions:
        # `evaluate --precision bf16`: attack iterations under bf16 autocast on the same (folded) view; clean flags,
        # every candidate's re-check and the flags compared below are the fp32 model's, and a candidate bf16 found
        # adversarial that fp32 does not is attacked again in fp32 (``flipped``)
        view = AutocastView(folded if folded is not None else model) if precision == "bf16" else folded
        _sync(device)
        t0 = time.perf_counter()
        r = run_autoattack(model, x, y, eps=eps, norm="linf", engine="fast", seed=seed, batch_size=max(len(y), 1), n_iter=n_iter, square_queries=queries, attack_model=view)
        _sync(device)
        t_ours = time.perf_counter() - t0
        extra: dict[str, Any] = {}
        if precision != "fp32":
            extra["cpu_native_bf16"] = cpu_native_bf16() if device.type == "cpu" else None
            if fp32 is not None:
                extra.update(fp32_seconds=round(fp32[1], 3), speedup_over_fp32=round(fp32[1] / t_ours, 2) if t_ours > 0 else None,
                             flag_disagreements_with_fp32=int((r.robust != fp32[0]).sum()))
        _emit(
            task=task, impl="robustlab.autoattack(engine=fast)", reference="pyautoattack.AutoAttack.run_standard_evaluation", device=str(device), n=n,
            precision=precision, seconds=round(t_ours, 3), reference_seconds=round(t_ref, 3), ratio=round(t_ref / t_ours, 2) if t_ours > 0 else None,
            eps=eps, apgd_iterations=n_iter, square_queries=queries, clean_accuracy=float(r.clean_correct.float().mean()),
            robust_accuracy=float(r.robust.float().mean()), reference_robust_accuracy=float(ref.float().mean()),
            robust_accuracy_diff=float(r.robust.float().mean() - ref.float().mean()), flag_disagreements=int((r.robust != ref).sum()),
            seconds_per_attack={k: round(v, 3) for k, v in r.seconds.items()}, folded_batch_norms=folded.folded if folded is not None else 0, flipped=r.flipped,
            heap=HEAP, **extra,
        )
        if precision == "fp32":
            fp32 = (r.robust.clone(), t_ours)
            if malt:
                bench_malt(model, x, y, eps=eps, device=device, task=task, n_iter=n_iter, aa_robust=r.robust, aa_seconds=t_ours, ref_robust=ref, ref_seconds=t_ref,
                           view=folded)


def bench_malt(model: Any, x: torch.Tensor, y: torch.Tensor, *, eps: float, device: torch.device, task: str, n_iter: int,
               aa_robust: torch.Tensor, aa_seconds: float, ref_robust: torch.Tensor, ref_seconds: float, view: Any = None) -> None:
    """MALT on the same points: its time against AutoAttack's, and the points AutoAttack breaks that MALT misses."""
    from robustlab.attacks.malt import MALT

    _sync(device)
    t0 = time.perf_counter()
    xa = MALT(n_iter=n_iter).perturb(view if view is not None else model, x, y, eps, seeds=list(range(len(y))))  # verdicts below: the model's
    _sync(device)
    t = time.perf_counter() - t0
    with torch.no_grad():
        robust = model(xa).argmax(1).eq(y)
    _emit(
        task=task.replace("autoattack", "malt"), impl="robustlab.attacks.malt.MALT", reference="robustlab.autoattack(engine=fast) and pyautoattack", device=str(device),
        n=len(y), seconds=round(t, 3), reference_seconds=round(ref_seconds, 3), ratio=round(ref_seconds / t, 2) if t > 0 else None,
        ratio_vs_robustlab_autoattack=round(aa_seconds / t, 2) if t > 0 else None, eps=eps, apgd_iterations=n_iter,
        robust_accuracy=float(robust.float().mean()), autoattack_robust_accuracy=float(aa_robust.float().mean()),
        reference_robust_accuracy=float(ref_robust.float().mean()),
        autoattack_breaks_malt_misses=int((robust & ~aa_robust).sum()), malt_breaks_autoattack_misses=int((~robust & aa_robust).sum()),
        reference_breaks_malt_misses=int((robust & ~ref_robust).sum()),
    )


def bench_pgd(model: Any, x: torch.Tensor, y: torch.Tensor, *, eps: float, device: torch.device, task: str, steps: int) -> None:
    try:
        import foolbox as fb
    except ImportError as exc:
        _emit(task=task, skipped=f"foolbox is not installed ({exc})")
        return

    from robustlab.attacks.pgd import PGD

    x, y = x.to(device), y.to(device)
    rel = 0.01 / 0.3  # foolbox's LinfPGD default
    torch.manual_seed(0)
    fmodel = fb.PyTorchModel(model, bounds=tuple(float(b) for b in model.bounds), device=device)
    _sync(device)
    t0 = time.perf_counter()
    _, ref_adv, _ = fb.attacks.LinfPGD(steps=steps, rel_stepsize=rel)(fmodel, x, y, epsilons=eps)
    _sync(device)
    t_ref = time.perf_counter() - t0
    with torch.no_grad():
        ref = float(model(ref_adv).argmax(1).eq(y).float().mean())
    for early in (True, False):
        t0 = time.perf_counter()
        adv = PGD(steps=steps, rel_stepsize=rel).perturb(model, x, y, eps, seeds=list(range(len(y))), early_stop=early)
        _sync(device)
        t = time.perf_counter() - t0
        with torch.no_grad():
            ra = float(model(adv).argmax(1).eq(y).float().mean())
        _emit(
            task=task, impl=f"robustlab.attacks.pgd.PGD(early_stop={early})", reference="foolbox.attacks.LinfPGD", device=str(device), n=len(y),
            seconds=round(t, 3), reference_seconds=round(t_ref, 3), ratio=round(t_ref / t, 2) if t > 0 else None, eps=eps, steps=steps,
            robust_accuracy=ra, reference_robust_accuracy=ref, robust_accuracy_diff=ra - ref,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny budgets (end-to-end test)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--n", type=int, default=100, help="digits test points")
    ap.add_argument("--cifar-n", type=int, default=None, help="shared CIFAR-10 images for the ResNet-18 (default: 1000 on cuda, 0 on cpu)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-digits", action="store_true")
    ap.add_argument("--cifar-model", default="zoo:cifar10-resnet18", help="model spec for the CIFAR rows (e.g. an adversarially trained checkpoint)")
    ap.add_argument("--skip-pgd", action="store_true")
    ap.add_argument("--no-fold-bn", action="store_true", help="robustlab's attacks iterate on the model itself (evaluate's --no-fold-bn)")
    ap.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=["fp32"],
                    help="robustlab AutoAttack runs after the reference, in this order (evaluate's --precision); bf16 lines compare with fp32's when it ran first")
    args = ap.parse_args()
    global FOLD_BN
    FOLD_BN = not args.no_fold_bn
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    logging.getLogger("auto-attack").setLevel(logging.ERROR)
    from robustlab.data import load_dataset
    from robustlab.models import load_model

    n_iter, queries, steps = (10, 100, 10) if args.quick else (100, 5000, 40)
    if not args.skip_digits:
        m = load_model("zoo:digits-cnn", device=str(device))
        d = load_dataset("digits", split="test")
        n = min(8 if args.quick else args.n, len(d))
        x, y = d.x[:n], d.y[:n]
        bench_autoattack(m, x, y, eps=0.1, device=device, task="autoattack/digits-cnn/linf=0.1", n_iter=n_iter, queries=queries, precisions=tuple(args.precisions))
        if not args.skip_pgd:
            bench_pgd(m, x, y, eps=0.1, device=device, task="pgd/digits-cnn/linf=0.1", steps=steps)
    cifar_n = args.cifar_n if args.cifar_n is not None else (1000 if device.type == "cuda" and not args.quick else 0)
    if cifar_n:
        shared = Path(os.environ.get("ROBUSTLAB_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
        npz = shared / "cifar10_test_1000.npz"
        if not npz.is_file():
            _emit(task="autoattack/cifar10-resnet18/linf=8/255", skipped=f"{npz} not found; set ROBUSTLAB_SHARED_DATA")
            return
        m = load_model(args.cifar_model, device=str(device))
        d = load_dataset(f"npz:{npz}", split="test")
        x, y = d.images(slice(0, cifar_n)), d.y[:cifar_n]
        label = "cifar10-resnet18" if args.cifar_model == "zoo:cifar10-resnet18" else Path(args.cifar_model.split(":")[-1]).name.split(".")[0]
        bench_autoattack(m, x, y, eps=8 / 255, device=device, task=f"autoattack/{label}/linf=8/255", n_iter=n_iter, queries=queries, precisions=tuple(args.precisions))
        if not args.skip_pgd:
            bench_pgd(m, x, y, eps=8 / 255, device=device, task="pgd/cifar10-resnet18/linf=8/255", steps=steps)


if __name__ == "__main__":
    main()
