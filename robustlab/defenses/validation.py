"""Per-epoch validation during training: clean accuracy and the method's robustness figure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..data import Dataset
from ..seeding import per_sample_noise, sample_seeds
from .base import DefenseMethod, ValMetric, eval_mode

#: Corruptions (severity 3) whose mean accuracy tracks AugMix training; none of them is an AugMix op.
VAL_CORRUPTIONS: tuple[str, ...] = ("gaussian_noise", "defocus_blur", "contrast", "pixelate", "jpeg_compression")


@dataclass(frozen=True)
class ValResult:
    """Validation figures of one epoch (fractions in [0, 1]).

    Attributes:
        clean_accuracy: top-1 accuracy on the validation images.
        robust_accuracy: PGD robust accuracy (adversarial methods), accuracy under the training
            noise (gaussian) or mean accuracy over :data:`VAL_CORRUPTIONS` at severity 3 (augmix).
        robust_name: which of the three ``robust_accuracy`` is (``pgd``, ``noise``, ``corruption``).
        n: number of validation images.
    """

    clean_accuracy: float
    robust_accuracy: float
    robust_name: str
    n: int


def validate(model: nn.Module, method: DefenseMethod, data: Dataset, *, seed: int, batch_size: int, pgd_steps: int = 10) -> ValResult:
    """Clean and robust accuracy of ``model`` on ``data`` (inputs already in the model's bounds).

    PGD: ``robustlab.attacks.pgd.PGD`` with ``pgd_steps`` steps of 2.5 * eps / steps and a random
    start, at the method's eps and norm, clean errors counted as non-robust. Seeds are fixed
    across epochs (``defend/val``), so epochs are compared on the same noise and starts.
    """
    from ..attacks.pgd import PGD

    kind = method.val_metric
    device = next(iter(model.parameters())).device
    bounds = tuple(float(b) for b in getattr(model, "bounds", (0.0, 1.0)))
    budget = method.val_budget()
    correct = robust = 0.0
    with eval_mode(model):
        for start, x, y in data.batches(batch_size):
            x, y = x.to(device), y.to(device)
            ids: Sequence[str] = data.ids[start : start + x.shape[0]]
            with torch.no_grad():
                correct += float((model(x).argmax(1) == y).sum())
            if kind is ValMetric.PGD and budget:
                atk = PGD(norm=method.val_norm(), steps=pgd_steps, rel_stepsize=2.5 / pgd_steps, random_start=True)
                xa = atk.perturb(model, x, y, float(budget), seeds=sample_seeds(seed, "defend/val/pgd", ids), bounds=bounds)  # type: ignore[arg-type]
                with torch.no_grad():
                    robust += float((model(xa).argmax(1) == y).sum())
            elif kind is ValMetric.NOISE and budget:
                noise = per_sample_noise(sample_seeds(seed, "defend/val/noise", ids), tuple(x.shape[1:]), device=device, dtype=x.dtype)
                with torch.no_grad():
                    robust += float((model(x + float(budget) * (bounds[1] - bounds[0]) * noise).argmax(1) == y).sum())  # sigma in [0, 1] units
            elif kind is ValMetric.CORRUPTION:
                from ..corruptions import corrupt

                lo, hi = bounds
                x01 = ((x - lo) / (hi - lo)).clamp(0, 1)
                acc = 0.0
                for name in VAL_CORRUPTIONS:
                    xc = corrupt(x01, name, 3, sample_seeds(seed, f"defend/val/{name}", ids))
                    with torch.no_grad():
                        acc += float((model(lo + (hi - lo) * xc.to(x.dtype)).argmax(1) == y).sum())
                robust += acc / len(VAL_CORRUPTIONS)
    n = len(data)
    return ValResult(correct / max(n, 1), robust / max(n, 1), kind.value, n)
