"""The runner: model + data + suite -> :class:`Scorecard`.

Order of work: the suite is validated first (before any model is loaded), then the model and data
are loaded and checked against each other (shapes, bounds, labels, a probe forward pass), then each
check runs. The scorecard is rewritten atomically after every check, so an interruption or an input
error loses nothing already computed; per-batch results live in ``OUT/results.sqlite`` for
``--resume``. A check that raises an unexpected error is recorded as ``error`` and the run goes on;
input errors (bad data, non-finite logits) stop the run with exit code 2 after saving.
"""

from __future__ import annotations

import logging
import os
import platform
import sys
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from . import __version__, distributed
from .checks import CHECKS, RunContext
from .data import Dataset, adapt_images, load_dataset
from .errors import DataError, ModelOutputError, RobustlabError, is_disk_failure
from .fastpaths import apply_fast_paths
from .memory import release_free_memory
from .models import LoadOptions, RobustModel, load_model
from .scorecard import CheckResult, Scorecard, Status
from .store import LOCK_NAME, OutputLock, ResultStore
from .suite import Suite

log = logging.getLogger(__name__)
#: one line per check on stderr (the CLI gives it a plain "%(message)s" handler)
progress_log = logging.getLogger("robustlab.progress")
#: below this many parameters a CPU run uses one torch thread unless --threads says otherwise
SMALL_MODEL_PARAMS = 2_000_000


@dataclass
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
    options: dict[str, Any] = field(default_factory=dict)
    precision: str = "fp32"
    threads: int | None = None
    channels_last: bool = False
    compile: bool = False


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


def make_progress(quiet: bool) -> Callable[..., Iterable[Any]]:
    def progress(it: Iterable[Any], *, total: int | None = None, desc: str = "") -> Iterable[Any]:
        if quiet or not sys.stderr.isatty():  # no carriage-return bars in logs; -v logs each check instead
            return it
        from tqdm.auto import tqdm

        return tqdm(it, total=total, desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True, mininterval=0.5)

    return progress


def environment(device: torch.device) -> dict[str, Any]:
    from importlib import metadata

    pkgs = {}
    for p in ("torch", "torchvision", "numpy", "scipy", "scikit-learn", "foolbox", "pyautoattack", "imagecorruptions", "mlflow", "robustbench", "timm"):
        try:
            pkgs[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            continue
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "packages": pkgs,
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
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


def evaluate(cfg: RunConfig) -> Scorecard:
    """Run ``cfg.suite`` on the model and data of ``cfg``; write and return the scorecard."""
    t0 = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.load.device)
    dist_info = distributed.init(device.type)
    if dist_info.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
    cfg.load.device = str(device)
    progress = make_progress(cfg.quiet or not dist_info.is_main)

    t = time.perf_counter()
    model = load_model(cfg.model_spec, cfg.load)
    fast_model = apply_fast_paths(model, precision=cfg.precision, channels_last=cfg.channels_last, compile=cfg.compile)
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
    raw = load_dataset(data_spec, split="test", root=cfg.data_root, download=cfg.download).limit(cfg.limit)
    raw.check_labels(model.num_classes)
    from .data.naming import resolve_dataset_name

    ds_name, ds_source = resolve_dataset_name(cfg.dataset, str(raw.extra.get("dataset") or "") or None, model.info.dataset)
    if ds_name is not None and model.info.dataset != ds_name:
        model.info = model.info.with_overrides(dataset=ds_name)  # budgets read the family from it
    log.info("data set: %s (%s)", ds_name or "not named", ds_source)  # recorded in the scorecard's data section
    cfg.options = {**cfg.options, "dataset": ds_name} if ds_name else cfg.options
    data = prepare_data(model, raw)
    with torch.no_grad():
        xb = data.images(slice(0, min(len(data), cfg.batch_size))).to(device)
        try:
            logits = model(xb)
        except (RuntimeError, ValueError, TypeError, IndexError) as exc:  # shape/channel mismatches surface here
            raise ModelOutputError(
                f"the model fails on a batch of {data_spec} of shape {tuple(xb.shape)} ({' '.join(str(exc).split())[:160]}); "
                "check that the data matches the model (--data, --input-shape, --mean/--std channels, --arch)."
            ) from exc
        model.check_output(logits, xb.shape[0])
    t_data = time.perf_counter() - t

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lock = OutputLock(out, name=LOCK_NAME if not dist_info.enabled or dist_info.is_main else f".robustlab.rank{dist_info.rank}.lock", command=cfg.command)
    lock.acquire()
    try:
        return _run_checks(cfg, model, fast_model, raw, data, data_spec, (ds_name, ds_source), device, dist_info, progress, out, started, t0, t_model, t_data)
    finally:
        lock.release()


def run_fingerprint(cfg: RunConfig, model: RobustModel, raw: Dataset, data_spec: str) -> dict[str, Any]:
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
        "precision": cfg.precision,
        "channels_last": cfg.channels_last,
        "compile": cfg.compile,
        "options": dict(cfg.options),
        "robustlab": __version__,
    })
    return fp


def _run_checks(cfg: RunConfig, model: RobustModel, fast_model: Any, raw: Dataset, data: Dataset, data_spec: str, dataset: tuple[str | None, str], device: torch.device,
                dist_info: Any, progress: Callable[..., Iterable[Any]], out: Path, started: str, t0: float, t_model: float, t_data: float) -> Scorecard:
    ds_name, ds_source = dataset
    fingerprint = run_fingerprint(cfg, model, raw, data_spec)
    store_name = "results.sqlite" if not dist_info.enabled else f"results.rank{dist_info.rank}.sqlite"
    store = ResultStore(out / store_name, fingerprint)
    try:
        kept = store.begin(resume=cfg.resume)
    except BaseException:
        store.close()
        raise
    if cfg.resume:
        log.info("resuming: %d stored batch results reused", kept)

    data_cache: dict[tuple[str, str, bool], Dataset] = {}

    def load_data(spec: str, split: str = "test", *, adapt: bool = False, limit: int | None = None) -> Dataset:
        key = (spec, split, adapt)
        if key not in data_cache:
            d = load_dataset(spec, split=split, root=cfg.data_root, download=cfg.download)
            data_cache[key] = prepare_data(model, d, adapt=adapt)
        return data_cache[key].limit(limit)

    card = Scorecard(
        tool={"name": "robustlab", "version": __version__},
        model={**model.info.to_dict(), "loaded_in_seconds": None},
        data={"spec": data_spec, "split": "test", "n": len(data), "ids_sha256": raw.ids_sha256(), "content_sha256": raw.content_sha256(),
              "classes": raw.classes, "limit": cfg.limit, "dataset": ds_name, "dataset_source": ds_source, "ids": list(raw.ids), "labels": raw.y.tolist()},
        suite={"name": cfg.suite.name, "source": cfg.suite.source, "sha256": cfg.suite.sha256, "checks": [e.id for e in cfg.suite.entries]},
        environment=environment(device),
        run={"seed": cfg.seed, "batch_size": cfg.batch_size, "device": str(device), "command": cfg.command, "started": started,
             "resumed": cfg.resume, "trust_code": cfg.load.trust_code, "world_size": dist_info.world_size,
             "precision": cfg.precision, "channels_last": cfg.channels_last, "compile": cfg.compile, **cfg.options},
    )
    card.model.pop("loaded_in_seconds")
    card.timings = {"load_model": round(t_model, 3), "load_data": round(t_data, 3)}
    card_path = out / "scorecard.json"
    ctx = RunContext(model=model, data=data, seed=cfg.seed, batch_size=cfg.batch_size, device=device, out_dir=out, store=store,
                     load_data=load_data, progress=progress, data_spec=data_spec, options=cfg.options, dist=dist_info, fast_model=fast_model)
    try:
        for entry in cfg.suite.entries:
            cls = CHECKS.get(entry.check)
            check = cls(id=entry.id, params=entry.params)
            if not cfg.quiet and dist_info.is_main:
                progress_log.info("[%d/%d] %s (%s) ...", len(card.checks) + 1, len(cfg.suite.entries), entry.id, entry.check)
            tc = time.perf_counter()
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
            card.timings[f"check/{entry.id}"] = result.seconds
            card.timings["total"] = round(time.perf_counter() - t0, 3)
            if dist_info.is_main:
                card.write(card_path)
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


def _errored(entry: Any, exc: Exception) -> CheckResult:
    """A check that failed is recorded as ``error``, so that it does not lose the others."""
    if isinstance(exc, RobustlabError):
        return CheckResult(id=entry.id, check=entry.check, status=Status.ERROR, reason=str(exc), params=_params(entry.params))
    log.error("check %s failed: %s", entry.id, exc)
    log.debug("%s", traceback.format_exc())
    return CheckResult(id=entry.id, check=entry.check, status=Status.ERROR, reason=f"{type(exc).__name__}: {exc}", params=_params(entry.params))


def _params(p: Any) -> dict[str, Any]:
    import dataclasses

    return dataclasses.asdict(p) if dataclasses.is_dataclass(p) and not isinstance(p, type) else dict(p or {})
