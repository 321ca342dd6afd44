"""Hyperparameter selection for ODIN and Mahalanobis on validation data.

Protocol: the grid point with the lowest FPR@95TPR between in-distribution validation images and a
validation OOD set that is none of the test OOD sets; ties go to the higher AUROC, then to the
earlier grid point. The default validation OOD set is FGSM-perturbed in-distribution validation
images (Lee et al. 2018, "validation on adversarial samples"), which never overlaps any OOD test set.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from .metrics import ood_metrics

if TYPE_CHECKING:
    from ..models.wrapper import RobustModel
    from .base import Detector


@dataclass(frozen=True)
class GridPoint:
    params: dict[str, float]
    fpr95: float
    auroc: float


@dataclass(frozen=True)
class TuningResult:
    """The chosen hyperparameters and the validation figures of every grid point."""

    chosen: dict[str, float]
    fpr95: float
    auroc: float
    grid: list[GridPoint] = field(default_factory=list)


def make_grid(values: Mapping[str, Sequence[float]]) -> list[dict[str, float]]:
    keys = list(values)
    return [dict(zip(keys, (float(v) for v in combo), strict=True)) for combo in itertools.product(*(values[k] for k in keys))]


def fgsm_images(model: "RobustModel", x: torch.Tensor, *, eps: float) -> torch.Tensor:
    """x + eps * (hi - lo) * sign(grad_x CE(f(x), argmax f(x))), clamped to ``model.bounds``.

    Shapes: (N, C, H, W) -> (N, C, H, W). References: Goodfellow et al. 2015 (FGSM); Lee et al. 2018
    use such images as the validation OOD set for tuning.
    """
    from .base import input_gradient_sign

    x = x.to(model.device)

    def loss(xg: torch.Tensor) -> torch.Tensor:
        logits = model(xg).float()
        return F.cross_entropy(logits, logits.argmax(dim=1), reduction="none")

    lo, hi = model.bounds
    return (x + eps * (hi - lo) * input_gradient_sign(x, loss)).clamp(lo, hi).detach()


def tune(
    detector: "Detector",
    model: "RobustModel",
    x_id: torch.Tensor,
    x_ood: torch.Tensor,
    grid: Sequence[Mapping[str, float]],
    *,
    batch_size: int = 128,
    tpr: float = 0.95,
    track: Callable[..., Any] | None = None,
) -> TuningResult:
    """Score ID and OOD validation images on every grid point, set and return the best point.

    Shapes: x_id (n, C, H, W), x_ood (m, C, H, W), both in ``model.bounds``.
    """
    per_point_id: list[list[torch.Tensor]] = [[] for _ in grid]
    per_point_ood: list[list[torch.Tensor]] = [[] for _ in grid]
    for xs, sink in ((x_id, per_point_id), (x_ood, per_point_ood)):
        starts = range(0, xs.shape[0], batch_size)
        for s in track(starts, total=len(starts), desc=f"tune {detector.name}") if track else starts:
            for j, sc in enumerate(detector.score_grid(model, xs[s : s + batch_size], grid)):
                sink[j].append(sc.detach().float().cpu())
    points = []
    for j, g in enumerate(grid):
        m = ood_metrics(torch.cat(per_point_id[j]).numpy(), torch.cat(per_point_ood[j]).numpy(), tpr=tpr)
        points.append(GridPoint(dict(g), m.fpr95, m.auroc))
    best = min(range(len(points)), key=lambda j: (points[j].fpr95, -points[j].auroc, j))
    detector.set_params(**points[best].params)
    return TuningResult(chosen=dict(points[best].params), fpr95=points[best].fpr95, auroc=points[best].auroc, grid=points)


__all__ = ["GridPoint", "TuningResult", "fgsm_images", "make_grid", "tune"]
