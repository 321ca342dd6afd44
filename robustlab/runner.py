"""The check runner: a loaded model + data + suite -> :class:`Scorecard`.

The pipelines (:mod:`robustlab.pipelines`) load the model and data and lock the output folder;
this module checks data against the model (:func:`prepare_data`) and runs each check of the suite
(:func:`run_checks`). The scorecard is rewritten atomically after every check, so an interruption or
an input error loses nothing already computed; per-batch results live in ``OUT/results.sqlite`` for
``--resume``. A check that raises an unexpected error is recorded as ``error`` and the run goes on;
input errors (bad data, non-finite logits) stop the run with exit code 2 after saving.
"""

from __future__ import annotations

import logging
import os
import platform
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, cast

import torch

from . import __version__, distributed
from .checks import CHECKS, RunContext
from .data import Dataset, adapt_images, load_dataset
from .errors import DataError, ModelOutputError, RobustlabError, cause_line, is_disk_failure
from .fastpaths import cpu_native_bf16, folded_count, tf32_state
from .memory import heap_settings, peak_rss_mb, release_free_memory
from .models import LoadOptions, RobustModel
from .progress_lines import progress_log
from .scorecard import CheckResult, Scorecard, Status
from .seeding import reseed_model_rng
from .store import ResultStore
from .suite import Suite

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run (recorded in the scorecard)."""

    model_spec: str
    load: LoadOptions
    suite: Suite
    data_spec: str | None = None
    dataset: str | None = None  # the data set's name (--dataset), see robustlab.data.naming
    data_root: str | None = None
    download: bool = False
    out_dir: Path = Path("reports/run")
    seed: int = 0
    batch_size: int = 128
    limit: int | None = None
    resume: bool = False
    quiet: bool = False
    command: str = ""
    ood_fit_data: str | None = None  # --fit-data: the data whose train split fits OOD detectors
    defend_role: str | None = None  # "before" / "after" when the defend pipeline evaluates
    precision: str = "fp32"
    threads: int | None = None
    channels_last: bool = False
    compile: bool = False
    fold_bn: bool = True  # attack iterations on the batch-norm-folded view (--no-fold-bn: on the model)
    save_adversarial: bool = False  # --save-adversarial: write the adversarial checks' examples under OUT/adversarial/

    def recorded_options(self, dataset: str | None) -> dict[str, Any]:
        """The run's optional settings as the scorecard's ``run`` section, the store fingerprint and
        :attr:`RunContext.options` record them; ``dataset`` is the resolved data-set name."""
        out: dict[str, Any] = {}
        if self.ood_fit_data:
            out["ood_fit_data"] = self.ood_fit_data
        if self.defend_role is not None:
            out["defend"] = {"role": self.defend_role}
        if dataset:
            out["dataset"] = dataset
        if self.save_adversarial or self.suite.save_adversarial:
            out["save_adversarial"] = True  # recorded only when on: runs without it keep their scorecards
        if not self.fold_bn:
            out["fold_bn"] = False  # the checks read it here (certify's smoothing copy); recorded only when off
        return out


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RobustlabError("--device cuda was asked for but no CUDA device is available; use --device cpu or auto.")
    try:
        dev = torch.device(name)
    except RuntimeError as exc:
        raise RobustlabError(f"unknown device {name!r}; use --device auto, cpu, cuda or cuda:N.") from exc
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise RobustlabError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA device(s); use cuda:0 .. cuda:{torch.cuda.device_count() - 1}.")
    return dev


def environment(device: torch.device) -> dict[str, Any]:
    from importlib import metadata

    pkgs = {}
    for p in ("torch", "torchvision", "numpy", "scipy", "scikit-learn", "foolbox", "pyautoattack", "imagecorruptions", "mlflow", "robustbench", "timm"):
        try:
            pkgs[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            continue
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "packages": pkgs,
    }
    if device.type == "cpu":
        # the kernels fp32 convolutions ran on (their last bits depend on it) and whether --precision bf16 is native here
        env["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        env["cpu_native_bf16"] = cpu_native_bf16()
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["math"] = tf32_state()  # what the convolutions and matmuls actually ran in
    return env


def prepare_data(model: RobustModel, data: Dataset, *, adapt: bool = False) -> Dataset:
    """Check data against the model contract and map it to ``model.bounds``.

    With ``adapt``, images of another shape or channel count are converted (for OOD sets).
    """
    if data.bounds != (0.0, 1.0):
        raise DataError(f"data plugin {data.spec} yields bounds {data.bounds}; data plugins must yield [0, 1].")
    probe = data.images(slice(0, min(len(data), 64)))
    if adapt and model.input_shape is not None and tuple(probe.shape[1:]) != tuple(model.input_shape):
        shape = model.input_shape
        if data.x is not None:
            from dataclasses import replace

            data = replace(data, x=adapt_images(data.x, shape))
        else:
            from dataclasses import replace

            base = data.loader
            assert base is not None
            data = replace(data, loader=lambda idx: adapt_images(base(idx), shape))
        probe = data.images(slice(0, min(len(data), 64)))
    if data.x is not None:
        xmin, xmax = float(data.x.min()), float(data.x.max())
        if xmin < -1e-6 or xmax > 1 + 1e-6 or not torch.isfinite(data.x).all():
            raise DataError(f"data {data.spec} has values in [{xmin:.4g}, {xmax:.4g}]; images must be in [0, 1] (uint8 0..255 or float 0..1).")
    mapped = data.to_bounds(model.bounds)
    model.check_inputs(mapped.images(slice(0, min(len(data), 64))))
    return mapped


def run_fingerprint(cfg: RunConfig, model: RobustModel, raw: Dataset, data_spec: str, *, dataset: str | None = None) -> dict[str, Any]:
    """Everything that can change a number of the run, as a flat mapping (see :mod:`robustlab.store`)."""
    info = model.info.to_dict()
    fp: dict[str, Any] = {f"model.{k}": info.get(k) for k in (
        "spec", "format", "architecture", "num_classes", "input_shape", "bounds", "mean", "std", "class_names", "feature_layer", "trusted", "extra")}
    fp.update({
        "model_sha256": model.info.sha256 or cfg.model_spec,
        "model_spec": cfg.model_spec,
        "data": raw.content_sha256(),
        "data.spec": data_spec,
        "data.ids_sha256": raw.ids_sha256(),
        "data.limit": cfg.limit,
        "suite.sha256": cfg.suite.sha256,
        "seed": cfg.seed,
        "batch_size": cfg.batch_size,
        "device": model.device.type,  # a CPU and a GPU differ in the last bits: a run resumed on the other keeps nothing
        "precision": cfg.precision,
        "channels_last": cfg.channels_last,
        "compile": cfg.compile,
        "options": cfg.recorded_options(dataset),
        "robustlab": __version__,
    })
    return fp


def run_checks(cfg: RunConfig, model: RobustModel, fast_model: Any, raw: Dataset, data: Dataset, data_spec: str, dataset: tuple[str | None, str], device: torch.device,
               dist_info: Any, progress: Callable[..., Iterable[Any]], out: Path, started: str, t0: float, t_model: float, t_data: float) -> Scorecard:
    """Run each check of ``cfg.suite`` on the prepared ``data``; write ``out/scorecard.json`` after each."""
    ds_name, ds_source = dataset
    options = cfg.recorded_options(ds_name)
    fingerprint = run_fingerprint(cfg, model, raw, data_spec, dataset=ds_name)
    if cfg.resume and options.get("save_adversarial"):
        from .adversarial_examples import check_index_for_resume, root_of

        check_index_for_resume(root_of(out))  # a damaged index.json: refused before any check runs
    store_name = "results.sqlite" if not dist_info.enabled else f"results.rank{dist_info.rank}.sqlite"
    store = ResultStore(out / store_name, fingerprint)
    try:
        kept = store.begin(resume=cfg.resume)
    except BaseException:
        store.close()
        raise
    if dist_info.is_main:  # a killed run's half-written files (scorecard, shards) go: under the lock none is being written
        from .adversarial_examples import root_of
        from .jsonio import remove_stale_temp_files

        stale = remove_stale_temp_files(out) + remove_stale_temp_files(root_of(out), recursive=True)
        if stale:
            log.info("removed %d temp files a killed run left in %s", stale, out)
    distributed.barrier(dist_info)  # no rank starts writing before the sweep is over
    if cfg.resume:
        if dist_info.is_main:
            (log if cfg.quiet else progress_log).info("resuming: %d stored batch results reused", kept)  # -v shows it under --quiet
    elif options.get("save_adversarial"):
        if dist_info.is_main:
            import shutil

            from .adversarial_examples import root_of

            shutil.rmtree(root_of(out), ignore_errors=True)  # a fresh run never mixes in an earlier run's examples
        distributed.barrier(dist_info)  # no rank writes a shard before the old ones are gone

    data_cache: dict[tuple[str, str, bool], Dataset] = {}

    def load_data(spec: str, split: str = "test", *, adapt: bool = False, limit: int | None = None) -> Dataset:
        key = (spec, split, adapt)
        if key not in data_cache:
            d = load_dataset(spec, split=split, root=cfg.data_root, download=cfg.download, input_shape=model.input_shape)
            data_cache[key] = prepare_data(model, d, adapt=adapt)
        return data_cache[key].limit(limit)

    card = Scorecard(
        tool={"name": "robustlab", "version": __version__},
        model={**model.info.to_dict(), "loaded_in_seconds": None},
        data={"spec": data_spec, "split": "test", "n": len(data), "ids_sha256": raw.ids_sha256(), "content_sha256": raw.content_sha256(),
              "classes": raw.classes, "limit": cfg.limit, "dataset": ds_name, "dataset_source": ds_source, "ids": list(raw.ids), "labels": raw.y.tolist(),
              **({"preprocessing": raw.preprocessing} if raw.preprocessing else {})},
        suite={"name": cfg.suite.name, "source": cfg.suite.source, "sha256": cfg.suite.sha256, "checks": [e.id for e in cfg.suite.entries]},
        environment=environment(device),
        run={"seed": cfg.seed, "batch_size": cfg.batch_size, "device": str(device), "command": cfg.command, "started": started,
             "resumed": cfg.resume, "trust_code": cfg.load.trust_code, "world_size": dist_info.world_size,
             "precision": cfg.precision, "channels_last": cfg.channels_last, "compile": cfg.compile,
             "fold_bn": cfg.fold_bn, "folded_batch_norms": folded_count(fast_model), **options},
    )
    card.model.pop("loaded_in_seconds")
    card.timings = {"load_model": round(t_model, 3), "load_data": round(t_data, 3)}
    # Peak resident memory (ru_maxrss, MiB) of this process, after each check and overall; under torchrun
    # every rank's peak as well. Volatile, like the timings: kept in ``environment``.
    memory: dict[str, Any] = {"peak_rss_mib": round(peak_rss_mb(), 1), "peak_rss_mib_after_check": {}, "heap": heap_settings()}
    card.environment["memory"] = memory
    card_path = out / "scorecard.json"
    ctx = RunContext(model=model, data=data, seed=cfg.seed, batch_size=cfg.batch_size, device=device, out_dir=out, store=store,
                     load_data=load_data, progress=progress, data_spec=data_spec, options=options, dist=dist_info, fast_model=fast_model)
    try:
        for entry in _ordered(cfg.suite.entries, consumers=bool(options.get("save_adversarial"))):
            cls = CHECKS.get(entry.check)
            check = cls(id=entry.id, params=entry.params)
            if not cfg.quiet and dist_info.is_main:
                progress_log.info("[%d/%d] %s (%s) ...", len(card.checks) + 1, len(cfg.suite.entries), entry.id, entry.check)
            tc = time.perf_counter()
            reseed_model_rng(cfg.seed, entry.id)  # a model's own randomness (dropout left on, noise layers): same seed, same scorecard
            try:
                result = check.run(ctx)
            except (DataError, ModelOutputError):
                raise
            except Exception as exc:  # noqa: BLE001 - a failing check must not lose the others
                if is_disk_failure(exc):  # a full or read-only disk stops the run (exit 2); stored batches stay for --resume
                    raise
                result = _errored(entry, exc)
            result.seconds = round(time.perf_counter() - tc, 3)
            dup = sorted(set(card.metrics()) & set(result.metrics))
            if dup:
                result.status, result.reason = Status.ERROR, f"metric keys {dup[:3]} already reported by another check; give the suite entries distinct ids."
                result.metrics, result.intervals = {}, {}
            card.checks.append(result)
            ctx.results[entry.id] = result
            release_free_memory()  # what the check freed (its audit, its last batch) leaves the resident set
            memory["peak_rss_mib"] = memory["peak_rss_mib_after_check"][entry.id] = round(peak_rss_mb(), 1)  # ru_maxrss: this rank's peak so far
            card.timings[f"check/{entry.id}"] = result.seconds
            card.timings["total"] = round(time.perf_counter() - t0, 3)
            if dist_info.is_main:
                card.write(card_path)
        if all(c.status is not Status.ERROR for c in card.checks):  # an errored check's finished batches stay for --resume
            store.mark_finished()
        if dist_info.enabled:  # every rank reached this point: the gather cannot wait on a failed rank
            memory["peak_rss_mib_by_rank"] = distributed.all_gather_object(round(peak_rss_mb(), 1), dist_info)
    finally:
        card.run["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        card.timings["total"] = round(time.perf_counter() - t0, 3)
        card.run["complete"] = len(card.checks) == len(cfg.suite.entries)
        card.run["effective_batch_size"] = ctx.effective_batch_size or cfg.batch_size
        if dist_info.is_main:
            card.write(card_path)
        store.close()
    distributed.barrier(dist_info)
    return card


def _ordered(entries: Iterable[Any], *, consumers: bool) -> list[Any]:
    """The suite's checks in order; with ``consumers`` (the run saves adversarial examples), checks
    that read other checks' outputs (``Check.runs_after``: check families) move after the checks of
    those families, keeping the suite's order otherwise."""
    entries = list(entries)
    if not consumers:
        return entries
    families = {e.id: getattr(CHECKS.get(e.check), "family", "") for e in entries}
    out: list[Any] = []
    waiting: list[Any] = []
    for i, e in enumerate(entries):
        after = set(getattr(CHECKS.get(e.check), "runs_after", ()))
        if after and any(families[later.id] in after for later in entries[i + 1 :]):
            waiting.append(e)
        else:
            out.append(e)
    return out + waiting


def _errored(entry: Any, exc: Exception) -> CheckResult:
    """A check that failed is recorded as ``error``, so that it does not lose the others."""
    if isinstance(exc, RobustlabError):
        return CheckResult(id=entry.id, check=entry.check, status=Status.ERROR, reason=str(exc), params=_params(entry.params))
    reason = f"{type(exc).__name__}: {cause_line(exc)}"
    text = str(exc)
    if isinstance(exc, RuntimeError) and ("does not require grad" in text or "appears to not have been used in the graph" in text):
        # autograd found no path from the loss to the input (the second wording: a quantized or otherwise non-differentiable forward)
        reason = ("the model's output does not depend differentiably on its input (torch.no_grad(), .detach() or a non-differentiable "
                  "step inside forward), so gradient-based attacks cannot run on it; remove it from forward, or run black-box "
                  f"checks (square, corruption) only. ({reason})")
    log.error("check %s failed: %s", entry.id, reason)
    log.debug("%s", traceback.format_exc())
    return CheckResult(id=entry.id, check=entry.check, status=Status.ERROR, reason=reason, params=_params(entry.params))


def _params(p: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(p) if dataclasses.is_dataclass(p) and not isinstance(p, type) else dict(p or {})
