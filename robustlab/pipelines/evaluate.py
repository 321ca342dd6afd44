"""The evaluate pipeline: load the model and data of a :class:`RunConfig`, run its suite, write the scorecard.

Order of work: the suite is validated before this is called (the command parses it before any model
is loaded), then the model and data are loaded and checked against each other (shapes, bounds,
labels, a probe forward pass), the output folder is locked and :func:`robustlab.runner.run_checks`
runs each check.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import torch

from .. import distributed
from ..data import load_dataset
from ..data.naming import DATA_ENTRY, check_images_fit, class_count_note, resolve_dataset_name
from ..errors import DataError, ModelOutputError, RobustlabError, cause_line, printable
from ..fastpaths import apply_fast_paths
from ..models import load_model
from ..checks import CHECKS
from ..progress_lines import make_progress, progress_log
from ..runner import RunConfig, prepare_data, resolve_device, run_checks
from ..scorecard import Scorecard
from ..store import LOCK_NAME, OutputLock
from .budget_note import budget_summary

__all__ = ["RunConfig", "check_fit_data", "evaluate"]

log = logging.getLogger(__name__)
#: below this many parameters a CPU run uses one torch thread unless --threads says otherwise
SMALL_MODEL_PARAMS = 2_000_000


def check_fit_data(cfg: RunConfig) -> None:
    """Refuse, before any model loads, fit data the user named (``--fit-data``, an ood check's
    ``fit_data``) whose train split cannot be loaded: falling back to other data would change the
    OOD results silently. Only the evaluation data's own train split may be missing."""
    specs = [("--fit-data", cfg.ood_fit_data)] + [(f"suite check {e.id}: fit_data", getattr(e.params, "fit_data", None)) for e in cfg.suite.entries]
    seen: set[str] = set()
    for where, spec in specs:
        if not spec or spec in seen:
            continue
        seen.add(spec)
        try:
            load_dataset(spec, split="train", root=cfg.data_root, download=cfg.download)
        except RobustlabError as exc:
            raise DataError(f"{where} {printable(spec)}: {exc}") from exc


def evaluate(cfg: RunConfig) -> Scorecard:
    """Run ``cfg.suite`` on the model and data of ``cfg``; write and return the scorecard."""
    check_fit_data(cfg)
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.load.device)
    dist_info = distributed.init(device.type)
    if dist_info.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
    progress = make_progress(cfg.quiet or not dist_info.is_main)

    t = time.perf_counter()
    model = load_model(cfg.model_spec, replace(cfg.load, device=str(device)))
    fast_model = apply_fast_paths(model, precision=cfg.precision, channels_last=cfg.channels_last, compile=cfg.compile, fold_bn=cfg.fold_bn)
    if not cfg.threads and device.type == "cpu" and sum(p.numel() for p in model.parameters()) < SMALL_MODEL_PARAMS:
        # Intra-op threads only spin on tiny models: one thread is several times faster (measured:
        # AutoAttack on the digits CNN, 26 s with 1 thread vs 90 s with 2 on this 2-core machine).
        torch.set_num_threads(1)
    t_model = time.perf_counter() - t

    data_spec = cfg.data_spec or model.info.dataset
    if not cfg.data_spec and data_spec and not cfg.quiet and dist_info.is_main:
        source = "a sidecar file or the model file's header" if model.info.path and not cfg.model_spec.startswith("zoo:") else "the model's metadata"
        progress_log.info("data: %s (no --data given; the data set named by %s; pass --data to choose another)", data_spec, source)
    if not data_spec:
        raise DataError(f"model {cfg.model_spec} names no default data set; pass --data (e.g. --data digits, --data npz:PATH, --data folder:PATH).")
    t = time.perf_counter()
    raw = load_dataset(data_spec, split="test", root=cfg.data_root, download=cfg.download, input_shape=model.input_shape).limit(cfg.limit)
    raw = raw.match_classes(model.info.class_names, model.num_classes)  # folder: labels by class name where they can be
    raw.check_labels(model.num_classes)

    named_by = DATA_ENTRY if data_spec.partition(":")[0] in ("npz", "folder") else f"the data spec {data_spec}"
    ds_name, ds_source = resolve_dataset_name(cfg.dataset, str(raw.extra.get("dataset") or "") or None, model.info.dataset,
                                              data_source=named_by, data_is_model_default=not cfg.data_spec)
    if ds_name is not None and model.info.dataset != ds_name:
        model.info = model.info.with_overrides(dataset=ds_name)  # budgets read the family from it
    log.info("data set: %s (%s)", ds_name or "not named", ds_source)  # recorded in the scorecard's data section
    note = budget_summary(model, cfg.suite.entries, CHECKS, ds_name, ds_source)
    if note and not cfg.quiet and dist_info.is_main:
        progress_log.info("%s", note)  # which budget and protocol, and where they came from (issue 14)
    data = prepare_data(model, raw)  # the model's own input shape first: a model/data mismatch is said in its terms
    check_images_fit(ds_name, tuple(raw.sample_shape()), ds_source)
    if (count_note := class_count_note(ds_name, model.num_classes)) and dist_info.is_main:
        log.warning("%s", count_note)
    with torch.no_grad():
        xb = data.images(slice(0, min(len(data), max(cfg.batch_size, 2)))).to(device)  # 2 rows at least: softmax detection
        try:
            logits = model(xb)
        except RobustlabError:
            raise
        except Exception as exc:  # the user's code raised: shape/channel mismatches, its own asserts (a fixed batch size), export guards
            raise ModelOutputError(
                f"the model fails on a batch of {data_spec} of shape {tuple(xb.shape)} ({type(exc).__name__}: {cause_line(exc, 200)}); "
                "check that the data matches the model (--data, --input-shape, --mean/--std channels, --arch) and that it takes any batch size."
            ) from exc
        model.check_output(logits, xb.shape[0])
        if model.detect_probabilities(logits) and dist_info.is_main:
            log.warning("the model outputs probabilities (a final softmax), not logits: robustlab uses their log as the logits, "
                        "so confidences and calibration are the model's own; attacks on it may still be masked (see the softmax_outputs audit).")
        elif logits.shape[1] >= 2 and bool((logits == logits[:, :1]).all()) and dist_info.is_main:  # not "sigmoid scores": all 0 from a zeroed head
            log.warning("the model gives every class the same logit for every input of the first batch (an untrained head? torchvision's ViT "
                        "zero-initialises it): its predictions are all class 0 and its confidences 1/K; load trained weights.")
        elif model.output_kind == "logits" and logits.ndim == 2 and logits.shape[1] >= 2 and bool(((logits >= 0) & (logits <= 1)).all()) and dist_info.is_main:
            log.warning("every output of the model on the first batch lies in [0, 1] but its rows do not sum to 1 (sigmoid or clamped scores?): "
                        "robustlab reads them as logits, so accuracy holds but confidences and calibration are not the model's and attacks "
                        "on saturated scores are weaker; return logits from forward.")
    t_data = time.perf_counter() - t

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lock = OutputLock(out, name=LOCK_NAME if not dist_info.enabled or dist_info.is_main else f".robustlab.rank{dist_info.rank}.lock", command=cfg.command)
    lock.acquire()
    try:
        return run_checks(cfg, model, fast_model, raw, data, data_spec, (ds_name, ds_source), device, dist_info, progress, out, started, t0, t_model, t_data)
    finally:
        lock.release()
