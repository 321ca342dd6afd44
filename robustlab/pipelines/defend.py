"""The defend pipeline: load, (evaluate before), train, save, (evaluate after), compare.

The defended model is written with :func:`robustlab.models.save.save_model` (safetensors weights,
metadata in the header: bounds, mean, std, num_classes, input_shape, class_names, dataset and the
training provenance), so ``robustlab evaluate --model robust.safetensors`` loads it without
``--trust-code``. Before/after evaluations run the same suite with the same seed and data through
:func:`robustlab.pipelines.evaluate.evaluate`. The training itself is
:func:`robustlab.defenses.trainer.train`; ``defenses/`` knows nothing of runs, suites or scorecards.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

from .. import __version__
from ..errors import DataError, ResumeError, RobustlabError, SuiteError
from ..models import LoadOptions
from ..suite import Suite
from ..scorecard import Scorecard
from ..defenses.base import DEFENSES, DefenseMethod
from ..defenses.trainer import EpochRecord, TrainConfig, TrainResult, train

log = logging.getLogger(__name__)

TRUSTED_ARCH_PREFIXES = ("zoo-arch", "torchvision", "timm")


@dataclass(frozen=True)
class DefendConfig:
    """Everything that defines a defend run.

    ``out``: the defended model file (``.safetensors``); checkpoints go to ``<out>.ckpt/`` and
    evaluations (``before/``, ``after/``, ``comparison.*``) to ``eval_dir`` (default ``<out>.eval/``).
    ``val_fraction``: share of the training split held out for validation when the data plugin has
    no separate validation split. ``eval_data_spec``: the data the suite evaluates (default: the
    test split of ``data_spec``). ``eval_limit``: evaluate only the first n test images.
    """

    model_spec: str
    load: LoadOptions
    method: str
    method_params: dict[str, Any] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)
    data_spec: str | None = None
    dataset: str | None = None
    data_root: str | None = None
    download: bool = False
    out: Path = Path("robust.safetensors")
    resume: bool = False
    overwrite: bool = False
    suite: str | None = None
    eval_dir: Path | None = None
    eval_data_spec: str | None = None
    eval_limit: int | None = None
    eval_batch_size: int = 128
    val_fraction: float = 0.1
    train_limit: int | None = None
    quiet: bool = False
    command: str = ""

    @property
    def ckpt_dir(self) -> Path:
        return self.out.with_name(self.out.name + ".ckpt")

    @property
    def eval_out(self) -> Path:
        return self.eval_dir if self.eval_dir is not None else self.out.with_name(self.out.name + ".eval")


@dataclass(frozen=True)
class DefendResult:
    """The defended model file, the training outcome and, with a suite, both scorecards and the
    headline before/after rows (``{metric, before, after, delta, ci_disjoint}``)."""

    model_path: Path
    training: TrainResult
    before: Scorecard | None = None
    after: Scorecard | None = None
    comparison: list[dict[str, Any]] = field(default_factory=list)
    table: str = ""


def build_method(name: str, params: dict[str, Any]) -> DefenseMethod:
    """Instantiate a defense by name with validated params (unknown keys are a SuiteError)."""
    cls = DEFENSES.get(name)
    known = {f.name for f in dataclasses.fields(cls.Params)}
    bad = sorted(set(params) - known)
    if bad:
        raise SuiteError(f"method {name} has no parameter(s) {', '.join(bad)}; its parameters are: {', '.join(sorted(known)) or 'none'}.")
    return cls(cls.Params(**params))


def _split_train_val(train_ds: Any, val_ds: Any, *, fraction: float, seed: int) -> tuple[Any, Any]:
    """Use the plugin's validation split when it is disjoint from the training split; otherwise
    hold out ``fraction`` of the training split (a seeded, per-id choice)."""
    from ..seeding import derive_seed

    if val_ds is not None and len(val_ds) and not (set(val_ds.ids) & set(train_ds.ids)):
        return train_ds, val_ds
    if not 0 < fraction < 1:
        return train_ds, None
    keys = [derive_seed(seed, "defend/val-split", i) for i in train_ds.ids]
    order = sorted(range(len(keys)), key=lambda j: keys[j])
    k = max(1, int(round(fraction * len(order))))
    held = sorted(order[:k])
    rest = sorted(order[k:])
    log.info("no separate validation split: holding out %d of %d training images for validation", k, len(order))
    return train_ds.subset(rest), train_ds.subset(held)


def _remove_earlier_run(cfg: DefendConfig) -> None:
    """``--overwrite``: delete what an earlier defend run to the same ``--out`` wrote (its epoch
    checkpoints, and the ``before/``, ``after/`` and ``comparison.*`` of its evaluation folder), never
    anything else: ``--eval-out`` may name a folder that holds other files."""
    from ..defenses.trainer import latest_checkpoint

    ck = cfg.ckpt_dir
    if ck.is_dir():
        for f in ck.iterdir():
            if f.is_file() and re.fullmatch(r"(epoch-\d+|best)\.pt(\.tmp)?|history\.json", f.name):  # best.pt: train(); history.json: the CLI's MLflow record
                f.unlink()
        if latest_checkpoint(ck) is None and not any(ck.iterdir()):
            ck.rmdir()
        elif any(ck.iterdir()):
            log.warning("kept %s: it holds files defend did not write", ck)
    ev = cfg.eval_out
    if ev.is_dir():
        for name in ("before", "after"):
            if (ev / name).is_dir():
                shutil.rmtree(ev / name)
        for f in ev.glob("comparison.*"):
            if f.is_file():
                f.unlink()
        if ev == cfg.out.with_name(cfg.out.name + ".eval") and not any(ev.iterdir()):
            ev.rmdir()


def _same_weights(path: Path, net: Any) -> bool:
    """Whether the safetensors file ``path`` holds exactly ``net``'s state dict."""
    if not path.is_file():
        return False
    try:
        from safetensors.torch import load_file

        saved = load_file(str(path))
    except Exception:  # not readable as safetensors: it is rewritten
        return False
    own = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    return saved.keys() == own.keys() and all(saved[k].dtype == own[k].dtype and torch.equal(saved[k], own[k]) for k in own)


def _refuse_input_as_out(model_file: Path, out: Path) -> None:
    if model_file.exists() and model_file.resolve() == out.resolve():
        raise RobustlabError(f"--out {out} is the input model: defend would overwrite it (and could not resume or compare against it); pass another --out.")


def _train_subset(train_ds: Any, n: int | None, *, seed: int) -> Any:
    """``n`` training images drawn at random (a seeded, per-id choice, kept in file order), not
    the first ``n``: files sorted by label (e.g. CIFAR-10 test images grouped by class) would
    otherwise train on a few classes only."""
    from ..seeding import derive_seed

    if n is None or n >= len(train_ds):
        return train_ds
    if n <= 0:
        raise DataError(f"--train-limit must be positive, got {n}.")
    keys = [derive_seed(seed, "defend/train-limit", i) for i in train_ds.ids]
    return train_ds.subset(sorted(sorted(range(len(keys)), key=lambda j: keys[j])[:n]))


def _refuse_one_class(train_ds: Any, num_classes: int, train_limit: int | None) -> None:
    """Refuse training images of a single class (a model trained on them learns to answer that class
    for every input: nothing to defend), and warn when some of the model's classes are missing (the
    defended model forgets them)."""
    labels = sorted(int(c) for c in train_ds.y.unique().tolist())
    if len(labels) == 1:
        drew = f" (drawn by --train-limit {train_limit}: pass a larger one)" if train_limit is not None else ""
        raise DataError(f"the training split holds images of one class only (label {labels[0]}, {len(train_ds)} images){drew}; trained on it, "
                        "the model learns to answer that class for every input; pass training data with at least two classes.")
    missing = sorted(set(range(num_classes)) - set(labels))
    if missing:
        shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
        log.warning("the training split holds %d of the model's %d classes (no images of label %s); the defended model will unlearn the missing "
                    "ones; pass training data with every class.", len(labels), num_classes, shown)


def _warn_overlap(cfg: DefendConfig, spec: str, train_ds: Any) -> None:
    """Warn when the evaluation images are training images (e.g. an ``npz:`` file whose x/y serve
    every split): the before/after comparison would then measure fitting, not robustness."""
    from ..data import load_dataset

    try:
        test = load_dataset(spec, split="test", root=cfg.data_root, download=cfg.download)
    except DataError:
        return
    shared = len(set(test.ids) & set(train_ds.ids))
    if shared:
        log.warning("%d of the %d evaluation images of %s are also training images; pass --eval-data with held-out data "
                    "(e.g. npz:cifar10_test_1000.npz when training on cifar10_9000_jpeg.npz).", shared, len(test), spec)


def _evaluate(cfg: DefendConfig, suite: Suite, model_spec: str, load: LoadOptions, out_dir: Path, *, resume: bool) -> Scorecard:
    from .evaluate import RunConfig, evaluate

    rc = RunConfig(model_spec=model_spec, load=load, suite=suite, data_spec=cfg.eval_data_spec or cfg.data_spec, dataset=cfg.dataset, data_root=cfg.data_root, download=cfg.download,
                   out_dir=out_dir, seed=cfg.train.seed, batch_size=cfg.eval_batch_size, limit=cfg.eval_limit, resume=resume, quiet=cfg.quiet,
                   command=cfg.command, defend_role=out_dir.name)
    return evaluate(rc)


def run_defense(cfg: DefendConfig, *, progress: Callable[..., Iterable[Any]] | None = None,
                on_epoch: Callable[[EpochRecord], None] | None = None) -> DefendResult:
    """Run a defense end to end (see the module docstring). Errors a user can cause are raised as
    :class:`RobustlabError` before any training starts where possible.

    The whole run holds an exclusive lock beside the output (``.OUT.lock``, released by the kernel if
    the process dies), so a second ``defend`` on the same ``--out`` (``--overwrite`` included, which
    would delete the checkpoints the first one is writing) stops with exit 2 instead."""
    from ..store import OutputLock

    if cfg.out.suffix != ".safetensors":
        raise RobustlabError(f"--out {cfg.out} must end in .safetensors (robustlab's trusted format).")
    with OutputLock(cfg.out.parent, name=f".{cfg.out.name}.lock", command=cfg.command):
        return _run_defense(cfg, progress=progress, on_epoch=on_epoch)


def _run_defense(cfg: DefendConfig, *, progress: Callable[..., Iterable[Any]] | None, on_epoch: Callable[[EpochRecord], None] | None) -> DefendResult:
    from ..data import load_dataset
    from ..data.naming import DATA_ENTRY, resolve_dataset_name
    from ..models import load_model
    from ..models.save import save_model, unwrap
    from ..runner import prepare_data, resolve_device

    if cfg.resume and cfg.overwrite:
        raise SuiteError("--resume continues the run in OUT.ckpt/ and --overwrite deletes it to start over; pass one of them, not both.")
    method = build_method(cfg.method, cfg.method_params)
    cfg.train.validate()
    if not 0 <= cfg.val_fraction < 1:
        raise SuiteError(f"val_fraction must be in [0, 1), got {cfg.val_fraction}.")
    suite: Suite | None = None
    if cfg.suite:
        from ..suite import load_suite

        suite = load_suite(cfg.suite)  # validated before any model is loaded
    if cfg.out.suffix != ".safetensors":
        raise RobustlabError(f"--out {cfg.out} must end in .safetensors (robustlab's trusted format).")
    model_file = Path(cfg.model_spec.split(":", 1)[1] if cfg.model_spec.startswith("state-dict:") else cfg.model_spec).expanduser()
    _refuse_input_as_out(model_file, cfg.out)
    from ..defenses.trainer import latest_checkpoint

    latest = latest_checkpoint(cfg.ckpt_dir) if cfg.ckpt_dir.is_dir() else None
    if latest and not (cfg.resume or cfg.overwrite):  # said before any model or data is loaded or evaluated
        raise ResumeError(f"{cfg.ckpt_dir} already holds checkpoints (up to epoch {latest[0]}); pass --resume to continue that run, or --overwrite to start over.")

    device = resolve_device(cfg.load.device)
    load = dataclasses.replace(cfg.load, device=str(device))
    model = load_model(cfg.model_spec, load)
    if model.info.path:  # the file the spec resolved to (a quoted ~, a loader prefix): never overwritten either
        _refuse_input_as_out(Path(model.info.path), cfg.out)
    arch = model.info.architecture
    if not arch or arch.split(":", 1)[0] not in TRUSTED_ARCH_PREFIXES:
        raise RobustlabError(f"cannot write the defended model in robustlab's trusted format: its architecture is {arch or 'unknown'}; "
                             "load the model as a state dict with --arch zoo-arch:NAME, torchvision:NAME or timm:NAME.")
    data_spec = cfg.data_spec or model.info.dataset
    if not data_spec:
        raise DataError(f"model {cfg.model_spec} names no default data set; pass --data with a training split (e.g. --data digits or --data npz:PATH).")
    raw_train = _train_subset(load_dataset(data_spec, split="train", root=cfg.data_root, download=cfg.download, input_shape=model.input_shape), cfg.train_limit,
                              seed=cfg.train.seed)
    try:
        raw_val = load_dataset(data_spec, split="val", root=cfg.data_root, download=cfg.download, input_shape=model.input_shape)
    except DataError:
        raw_val = None
    raw_train, raw_val = _split_train_val(raw_train, raw_val, fraction=cfg.val_fraction, seed=cfg.train.seed)
    from ..defenses.trainer import Select
    from ..parsing import parse_enum

    if raw_val is None and parse_enum(Select, cfg.train.select, "select") is Select.BEST:
        raise SuiteError("--select best picks the epoch with the best validation score, but this run has no validation images "
                         "(--val-fraction 0 and the data has no validation split); pass --val-fraction > 0 or --select last.")
    if len(raw_train) == 0:
        raise DataError(f"no training images are left after holding out {len(raw_val) if raw_val is not None else 0} for validation; "
                        "pass more training images (--train-limit), a smaller --val-fraction, or data with its own validation split.")
    raw_train = raw_train.match_classes(model.info.class_names, model.num_classes)  # folder: labels by class name, as evaluate does
    if raw_val is not None:
        raw_val = raw_val.match_classes(model.info.class_names, model.num_classes)
    raw_train.check_labels(model.num_classes)
    _refuse_one_class(raw_train, model.num_classes, cfg.train_limit)
    ds_name, ds_source = resolve_dataset_name(cfg.dataset, str(raw_train.extra.get("dataset") or "") or None, model.info.dataset,
                                              data_source=DATA_ENTRY if data_spec.partition(":")[0] in ("npz", "folder") else f"the data spec {data_spec}",
                                              data_is_model_default=not cfg.data_spec)
    if ds_name is not None and model.info.dataset != ds_name:
        model.info = model.info.with_overrides(dataset=ds_name)  # the attack budget (--eps unset) is read from it, as in evaluate
    log.info("data set: %s (%s)", ds_name or "not named", ds_source)
    train_data = prepare_data(model, raw_train)
    val_data = prepare_data(model, raw_val) if raw_val is not None else None
    if train_data.x is not None:  # in-memory sets move to the device once
        train_data = dataclasses.replace(train_data, x=train_data.x.to(device), y=train_data.y.to(device))

    method = method.resolve(model)  # the budget: an error here comes before any evaluation
    if cfg.overwrite:  # only now, with the inputs known to be good, and only what defend wrote
        _remove_earlier_run(cfg)

    before = None
    if suite is not None:
        _warn_overlap(cfg, cfg.eval_data_spec or data_spec, raw_train)
        log.info("evaluating the input model with suite %s", suite.name)
        before = _evaluate(cfg, suite, cfg.model_spec, load, cfg.eval_out / "before", resume=cfg.resume)

    fingerprint = {"model": model.info.sha256 or cfg.model_spec, "data": raw_train.content_sha256(),
                   "val": raw_val.ids_sha256() if raw_val is not None else None}
    result = train(model, method, train_data, val_data, cfg.train, ckpt_dir=cfg.ckpt_dir, resume=cfg.resume, fingerprint=fingerprint,
                   progress=progress, on_epoch=on_epoch)
    info = model.info
    meta = {
        "num_classes": info.num_classes, "input_shape": info.input_shape, "bounds": info.bounds, "mean": info.mean, "std": info.std,
        # a data-set name only (never the training files' spec, which `evaluate` would take as its default data)
        "class_names": tuple(model.class_names), "dataset": info.dataset, "feature_layer": info.feature_layer,
        "defense": {
            "method": method.name, "params": method.params.to_dict(), "training": dataclasses.asdict(cfg.train), "references": method.references,
            "base_model": {"spec": cfg.model_spec, "sha256": info.sha256}, "data": {"spec": data_spec, "split": "train", "n": len(train_data),
            "content_sha256": raw_train.content_sha256(),
            "val_n": min(len(val_data), cfg.train.val_limit or len(val_data)) if val_data is not None else 0},
            "selected_epoch": result.selected_epoch, "history": [dataclasses.asdict(h) for h in result.history],
            "robustlab": __version__, "torch": torch.__version__, "command": cfg.command,
        },
    }
    meta = {k: v for k, v in meta.items() if v is not None}
    if cfg.resume and _same_weights(cfg.out, unwrap(model)):
        # an interrupted run that had written the model: keep that file, so the after-evaluation it
        # started (keyed on the file's sha256; the header holds the command and epoch times) resumes
        path = cfg.out
        log.info("kept %s: it holds these weights already", path)
    else:
        path = save_model(unwrap(model), cfg.out, architecture=arch, metadata=meta)
        log.info("wrote %s", path)

    after = rows = None
    table = ""
    if suite is not None:
        from .defend_comparison import write_comparison

        log.info("evaluating the defended model with suite %s", suite.name)
        load_after = LoadOptions(device=str(device))
        after = _evaluate(cfg, suite, str(path), load_after, cfg.eval_out / "after", resume=cfg.resume)
        assert before is not None
        rows, table = write_comparison(before, after, cfg.eval_out)
    return DefendResult(path, result, before, after, rows or [], table)
