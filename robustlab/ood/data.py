"""Resolving the data an OOD check needs: OOD and shift sets adapted to the model's input, and
disjoint fit / validation splits of in-distribution data.

Protocol for fit and validation data (recorded in the scorecard):

1. Fit data: the ``fit_data`` spec (suite parameter, or the run option ``ood_fit_data``), else the
   evaluation data's spec, always its ``train`` split. Samples whose ids are in the evaluation
   (test) set are dropped, so data plugins that serve one set for every split (``samples:...``,
   single-array ``npz:``) never leak test images into fitting.
2. Validation data: the evaluation spec's ``val`` split when fit data comes from that spec and the
   split exists (disjoint from fit and test ids); else a seeded ``val_fraction`` hold-out of the fit
   data, removed from fitting.
3. Without any fit data, detectors that need fitting are skipped and thresholds come from the ID
   test scores (flagged as optimistic in the audit).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from ..data.base import Dataset, adapt_images
from ..errors import RobustlabError
from ..seeding import derive_seed
from .sources import is_synthetic, synthetic_images

if TYPE_CHECKING:
    from ..checks.base import RunContext

log = logging.getLogger(__name__)


@dataclass
class FitPlan:
    """In-distribution data for fitting detectors and for thresholds/tuning (either may be None)."""

    fit: Dataset | None
    val: Dataset | None
    fit_source: str = ""
    val_source: str = ""
    notes: list[str] = field(default_factory=list)


def _to_model_input(ds: Dataset, ctx: "RunContext", shape: Sequence[int]) -> Dataset:
    """Materialise ``ds`` as (N, C, H, W) in the model's bounds and input shape."""
    x = ds.images()
    lo, hi = map(float, ds.bounds)
    mlo, mhi = map(float, ctx.model.bounds)
    if tuple(x.shape[1:]) != tuple(shape):
        x = adapt_images(((x - lo) / (hi - lo)).clamp(0, 1), shape)
        lo, hi = 0.0, 1.0
    if (lo, hi) != (mlo, mhi):
        x = (x - lo) / (hi - lo) * (mhi - mlo) + mlo
    return dataclasses.replace(ds, x=x.float().contiguous(), loader=None, bounds=(mlo, mhi))


def load_set(ctx: "RunContext", spec: str, *, split: str, shape: Sequence[int], limit: int | None, n_synthetic: int, seed: int) -> Dataset:
    """A named OOD / shift / fit set in the model's bounds and input shape, at most ``limit`` images
    (the first ones; synthetic sets have ``n_synthetic``)."""
    if is_synthetic(spec):
        x01 = synthetic_images(spec, n=n_synthetic, shape=shape, seed=seed)
        ds = Dataset(spec=spec, split=split, ids=[f"{spec}/{i}" for i in range(len(x01))], y=torch.full((len(x01),), -1, dtype=torch.int64), classes=[], x=x01)
        return _to_model_input(ds, ctx, shape)
    return _to_model_input(_load_raw(ctx, spec, split).limit(limit), ctx, shape)


def _load_raw(ctx: "RunContext", spec: str, split: str) -> Dataset:
    try:
        return ctx.load_data(spec, split=split, adapt=True)
    except TypeError:  # a load_data without the adapt keyword
        return ctx.load_data(spec, split=split)


def seeded_subset(ds: Dataset, n: int | None, seed: int, scope: str) -> Dataset:
    """At most ``n`` samples chosen by a seeded permutation (kept in their original order)."""
    if n is None or n >= len(ds):
        return ds
    perm = np.random.default_rng(derive_seed(seed, scope, ds.spec, ds.split)).permutation(len(ds))
    return ds.subset(sorted(int(i) for i in perm[:n]))


def _without(ds: Dataset, ids: set[str]) -> tuple[Dataset, int]:
    keep = [i for i, s in enumerate(ds.ids) if s not in ids]
    return (ds if len(keep) == len(ds) else ds.subset(keep)), len(ds) - len(keep)


def plan_fit_data(
    ctx: "RunContext",
    *,
    fit_data: str | None,
    fit_limit: int | None,
    val_fraction: float,
    val_limit: int | None = None,
    shape: Sequence[int],
    seed: int,
    min_fit: int,
) -> FitPlan:
    """Fit and validation splits following the module's protocol."""
    test_ids = set(ctx.data.ids)
    spec = fit_data or str(ctx.options.get("ood_fit_data") or "") or ctx.data_spec
    plan = FitPlan(fit=None, val=None)
    if not spec:
        plan.notes.append("no fit data: the run has no data spec and no fit_data was given.")
        return plan
    try:
        fit: Dataset | None = _load_raw(ctx, spec, "train")
    except RobustlabError as exc:
        plan.notes.append(f"no fit data: {spec} has no usable train split ({exc}). Set the ood check's fit_data parameter to in-distribution training images.")
        fit = None
    if fit is not None:
        fit, dropped = _without(fit, test_ids)
        if dropped:
            plan.notes.append(f"dropped {dropped} images of {spec} (train) that are also evaluation images.")
        if len(fit) < min_fit:
            plan.notes.append(f"fit data {spec} (train) has {len(fit)} images not in the evaluation set, fewer than {min_fit}; detectors that need fitting are skipped. Set fit_data to in-distribution training images.")
            fit = None
    val: Dataset | None = None
    if spec == ctx.data_spec:
        try:
            val, _ = _without(_load_raw(ctx, spec, "val"), test_ids | (set(fit.ids) if fit is not None else set()))
            val = val if len(val) >= 2 else None
            if val is not None:
                plan.val_source = f"{spec} (val split)"
        except RobustlabError:
            val = None
    if val is None and fit is not None:
        n_val = max(2, int(round(val_fraction * len(fit))))
        if len(fit) - n_val >= min_fit:
            perm = np.random.default_rng(derive_seed(seed, "ood-val-holdout", fit.ids_sha256())).permutation(len(fit))
            val = fit.subset(sorted(int(i) for i in perm[:n_val]))
            fit = fit.subset(sorted(int(i) for i in perm[n_val:]))
            plan.val_source = f"seeded {n_val}-image hold-out of {spec} (train), excluded from fitting"
    if fit is not None:
        fit = _to_model_input(seeded_subset(fit, fit_limit, seed, "ood-fit-limit"), ctx, shape)
        plan.fit_source = f"{spec} (train), {len(fit)} images"
    if val is not None:
        val = _to_model_input(seeded_subset(val, val_limit, seed, "ood-val-limit"), ctx, shape)
    plan.fit, plan.val = fit, val
    if val is None:
        plan.notes.append("no in-distribution validation data: thresholds come from the ID test scores (optimistic) and ODIN/Mahalanobis use their paper defaults instead of tuned values.")
    return plan
