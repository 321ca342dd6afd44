"""Resolving the data an OOD check needs: OOD and shift sets adapted to the model's input, and
disjoint fit / validation splits of in-distribution data.

Protocol for fit and validation data (recorded in the scorecard):

1. Fit data: the ``fit_data`` spec (suite parameter, or the run's ``--fit-data``), else the
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
from typing import Callable, Sequence

import numpy as np
import torch

from ..data.base import Dataset, adapt_images
from ..errors import RobustlabError
from ..seeding import derive_seed
from .sources import is_synthetic, synthetic_images

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunData:
    """What these helpers need of a run: built by the caller (the ood check) from its own context,
    so this package does not depend on the checks layer.

    ``load(spec, split=..., adapt=...)``: a data set prepared for the model (``adapt``: converted
    to its input shape); ``model_bounds``: the model's input range; ``eval_spec`` / ``eval_ids``:
    the evaluation data's spec and sample ids; ``fit_spec``: the run's default fit data
    (``--fit-data``), if any.
    """

    load: Callable[..., Dataset]
    model_bounds: tuple[float, float]
    eval_spec: str | None
    eval_ids: Sequence[str]
    fit_spec: str | None = None


@dataclass
class FitPlan:
    """In-distribution data for fitting detectors and for thresholds/tuning (either may be None)."""

    fit: Dataset | None
    val: Dataset | None
    fit_source: str = ""
    val_source: str = ""
    notes: list[str] = field(default_factory=list)


def _to_model_input(ds: Dataset, run: RunData, shape: Sequence[int]) -> Dataset:
    """Materialise ``ds`` as (N, C, H, W) in the model's bounds and input shape."""
    x = ds.images()
    lo, hi = map(float, ds.bounds)
    mlo, mhi = map(float, run.model_bounds)
    if tuple(x.shape[1:]) != tuple(shape):
        x = adapt_images(((x - lo) / (hi - lo)).clamp(0, 1), shape)
        lo, hi = 0.0, 1.0
    if (lo, hi) != (mlo, mhi):
        x = (x - lo) / (hi - lo) * (mhi - mlo) + mlo
    return dataclasses.replace(ds, x=x.float().contiguous(), loader=None, bounds=(mlo, mhi))


def load_set(run: RunData, spec: str, *, split: str, shape: Sequence[int], limit: int | None, n_synthetic: int, seed: int) -> Dataset:
    """A named OOD / shift / fit set in the model's bounds and input shape, at most ``limit`` images
    (the first ones; synthetic sets have ``n_synthetic``)."""
    if is_synthetic(spec):
        x01 = synthetic_images(spec, n=n_synthetic, shape=shape, seed=seed)
        ds = Dataset(spec=spec, split=split, ids=[f"{spec}/{i}" for i in range(len(x01))], y=torch.full((len(x01),), -1, dtype=torch.int64), classes=[], x=x01)
        return _to_model_input(ds, run, shape)
    return _to_model_input(_load_raw(run, spec, split).limit(limit), run, shape)


def refuse_id_overlap(ds: Dataset, run: RunData, spec: str, what: str) -> None:
    """Raise :class:`DataError` when the OOD set ``ds`` (loaded from ``spec``) is the evaluation data
    itself, or shares images (ids) with it: scores of in-distribution images counted as OOD give a
    meaningless AUROC."""
    from ..errors import DataError

    same = _source(spec) == _source(run.eval_spec or "")
    # ids of file-based sets carry only the file's name (``data.npz/x/0``): two files of one name in
    # different folders share ids, not images, so for them only the same file counts
    shared = set() if _file_based(spec) or _file_based(run.eval_spec or "") else set(ds.ids) & set(run.eval_ids)
    if same or shared:
        detail = f"shares {len(shared)} images with the evaluation data" if shared else f"is the evaluation data {run.eval_spec!r}"
        raise DataError(f"{what} {detail}, so it is not out-of-distribution; name another data set (e.g. samples:cifar10, noise:uniform).")


def _file_based(spec: str) -> bool:
    """Whether ``spec``'s argument names a file or folder (``npz:PATH``, ``folder:PATH``, a bare path)."""
    from pathlib import Path

    arg = spec.partition(":")[2] if ":" in spec and not Path(spec).exists() else spec
    return bool(arg) and Path(arg).expanduser().exists()


def _source(spec: str) -> str:
    """``spec`` with a file or folder argument resolved to its absolute path (one file, one source)."""
    from pathlib import Path

    if not _file_based(spec):
        return spec
    plugin, _, arg = spec.partition(":") if not Path(spec).exists() else ("", "", spec)
    return f"{plugin}:{Path(arg).expanduser().resolve()}"


def _load_raw(run: RunData, spec: str, split: str) -> Dataset:
    try:
        return run.load(spec, split=split, adapt=True)
    except TypeError:  # a loader without the adapt keyword
        return run.load(spec, split=split)


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
    run: RunData,
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
    test_ids = set(run.eval_ids)
    spec = fit_data or run.fit_spec or run.eval_spec
    plan = FitPlan(fit=None, val=None)
    if not spec:
        plan.notes.append("no fit data: the run has no data spec and no fit_data was given.")
        return plan
    try:
        fit: Dataset | None = _load_raw(run, spec, "train")
    except RobustlabError as exc:
        if fit_data or run.fit_spec:  # data the user named (fit_data, --fit-data) must be usable: never fall back silently
            raise
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
    if spec == run.eval_spec:
        try:
            val, _ = _without(_load_raw(run, spec, "val"), test_ids | (set(fit.ids) if fit is not None else set()))
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
        fit = _to_model_input(seeded_subset(fit, fit_limit, seed, "ood-fit-limit"), run, shape)
        plan.fit_source = f"{spec} (train), {len(fit)} images"
    if val is not None:
        val = _to_model_input(seeded_subset(val, val_limit, seed, "ood-val-limit"), run, shape)
    plan.fit, plan.val = fit, val
    if val is None:
        plan.notes.append("no in-distribution validation data: thresholds come from the ID test scores (optimistic) and ODIN/Mahalanobis use their paper defaults instead of tuned values.")
    return plan
