"""The compress pipeline: a model spec -> one compressed variant file (``robustlab compress``).

Calibration data (int8-static) is the *train* split of ``--calibration-data`` (default: the model's
own data set) and is refused when any of its images is also an image of a test split (the model's
data set, or the calibration spec's own test split when it has one), compared by pixel content:
quantization ranges fitted on the test images would flatter the variant on exactly those images.
The same data, checked the same way, is what ``qat`` and pruning with ``--epochs`` fine-tune on.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from .. import __version__
from ..compress.methods import CompressionError, CompressionSpec, Method
from ..compress.prune import newly_zeroed, prune_structured, prune_unstructured, sparsity, zeros_held
from ..compress.pt2e import calibrate, freeze, prepare_fake_quant, require_torchao
from ..compress.quantize import STACK_PT2E, STACK_TORCHAO
from ..compress.variant import save_variant
from ..data import Dataset, load_dataset
from ..errors import RobustlabError, printable
from ..models import LoadOptions, RobustModel, load_model
from ..models.metadata import META_KEYS
from ..runner import prepare_data

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CompressConfig:
    """One ``robustlab compress`` run."""

    model_spec: str
    load: LoadOptions
    method: CompressionSpec
    out: Path
    calibration_data: str | None = None
    calibration_n: int = 512
    data_root: str | None = None
    download: bool = False
    batch_size: int = 128
    epochs: int | None = None  # qat: epochs of quantization-aware fine-tuning (default 2); prune-*: of fine-tuning with the masks held (default none)
    seed: int = 0


@dataclass(frozen=True)
class CompressResult:
    path: Path
    compression: dict[str, Any]


def method_takes_no_epochs(method: Method) -> bool:
    """Whether ``method`` has no fine-tuning stage (``--epochs`` is a usage error with it)."""
    return not (method is Method.QAT or method.pruned)


def _image_hashes(data: Dataset, batch: int = 512) -> set[str]:
    out: set[str] = set()
    for i in range(0, len(data), batch):
        xb = data.images(slice(i, min(len(data), i + batch)))
        q = (xb.clamp(0, 1) * 255).round().to(torch.uint8).contiguous()  # 8-bit levels: a JPEG/float copy of the same image matches
        out.update(hashlib.sha256(img.numpy().tobytes()).hexdigest() for img in q)
    return out


def _test_split(spec: str, cfg: CompressConfig, input_shape: tuple[int, int, int] | None = None) -> Dataset | None:
    try:
        return load_dataset(spec, split="test", root=cfg.data_root, download=False, input_shape=input_shape)
    except (RobustlabError, OSError, ValueError) as exc:  # not available offline: cannot be compared, said in the log
        log.info("calibration check: the test split of %s is not available (%s); not compared", spec, type(exc).__name__)
        return None


def calibration_data(model: RobustModel, cfg: CompressConfig, *, limit: bool = True) -> tuple[Dataset, dict[str, Any]]:
    """The calibration images (train split, first ``calibration_n`` with ``limit``) and their record.

    Refused (:class:`CompressionError`) when any calibration image is an image of the test split of
    the model's data set, or of the calibration spec's own test split where the spec has splits
    (``npz:``/``folder:`` data have none: their "test split" is the same images)."""
    spec = cfg.calibration_data or model.info.dataset
    if not spec:
        raise CompressionError("the model names no data set to calibrate on; pass --calibration-data SPEC (training-like images, never the test split).")
    full = load_dataset(spec, split="train", root=cfg.data_root, download=cfg.download, input_shape=model.input_shape)
    cal = full.limit(cfg.calibration_n) if limit else full
    cal_hashes = _image_hashes(cal)
    for test_spec in dict.fromkeys(s for s in (model.info.dataset, spec) if s):
        test = _test_split(test_spec, cfg, model.input_shape)  # decoded as the calibration images, so the same image hashes the same
        if test is None or (test_spec != model.info.dataset and test.ids == full.ids):
            continue
        shared = cal_hashes & _image_hashes(test)
        if shared:
            raise CompressionError(
                f"calibration data {spec} contains {len(shared)} image(s) of the test split of {test_spec}; calibrate on training-like images "
                "(--calibration-data SPEC with a train split, e.g. npz:train.npz), never on the images the variant is evaluated on."
            )
    record = {"spec": spec, "split": cal.split, "n": len(cal), "sha256": cal.content_sha256()}
    return cal, record


def _batches(model: RobustModel, data: Dataset, batch_size: int) -> Iterator[torch.Tensor]:
    mapped = prepare_data(model, data)
    with torch.no_grad():
        for i in range(0, len(mapped), batch_size):
            yield model.normalise(mapped.images(slice(i, min(len(mapped), i + batch_size))).float())


def _finetune_pruned(pruned: torch.nn.Module, model: RobustModel, cfg: CompressConfig, train_data: Dataset, data_record: dict[str, Any], *, structured: bool) -> dict[str, Any]:
    """Fine-tune ``pruned`` in place for ``cfg.epochs`` on ``train_data``, the (checked) train split of
    the calibration data, pruned entries held at exactly zero; returns the record of what it trained on."""
    from ..compress.qat import finetune

    with zeros_held(pruned, structured=structured):
        finetune(pruned, model, prepare_data(model, train_data), epochs=int(cfg.epochs or 0), batch_size=cfg.batch_size, seed=cfg.seed)
    pruned.eval()
    return {"epochs": cfg.epochs, "seed": cfg.seed, "batch_size": cfg.batch_size, "data": data_record}


def _int8_record(stack: str, engine: str) -> dict[str, Any]:
    return {"stack": stack, "engine": engine, "torchao": require_torchao()}


def check_options(cfg: CompressConfig) -> None:
    """The checks of ``cfg`` that need no model, no data and no file system (usage errors first)."""
    if cfg.epochs is not None and method_takes_no_epochs(cfg.method.method):
        raise CompressionError(f"--epochs applies to qat and prune-unstructured/prune-structured (fine-tuning), not to {cfg.method.name}; leave it out.")
    lowest = 1 if cfg.method.method is Method.QAT else 0
    if cfg.epochs is not None and cfg.epochs < lowest:
        raise CompressionError(f"--epochs must be at least {lowest} for {cfg.method.name}, got {cfg.epochs}.")
    if cfg.out.suffix != ".safetensors":
        raise CompressionError(f"--out {printable(cfg.out)}: a variant is written as safetensors; name it *.safetensors.")


def check_out_path(out: Path, model: RobustModel | None = None) -> None:
    """Refuse an output path the variant cannot be written to: an existing folder, a path under a
    file, or the base model's own file. An existing variant file is replaced (atomically, once the new
    one is written: :func:`~robustlab.compress.variant.save_variant`)."""
    shown = printable(out)
    if out.is_dir():
        raise CompressionError(f"--out {shown} is a folder; pass a file path, e.g. {printable(out / 'variant.safetensors')}.")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise CompressionError(f"--out {shown}: {printable(parent)} is a file, not a folder; pass another path.")
            break
    own = model.info.path if model is not None else None
    if own and out.exists() and Path(own).resolve() == out.resolve():
        raise CompressionError(f"--out {shown} is the file of the model being compressed; write the variant to another path.")
    if out.exists():
        log.info("%s exists; it is replaced once the new variant is written", out)


def check_recompression(model: RobustModel, spec: str, method: CompressionSpec) -> dict[str, Any] | None:
    """The compression record of ``model`` when it is a variant that may be compressed again (a pruned,
    float32 one: into any method); None for a plain model. Refuses (:class:`CompressionError`) an int8
    variant (its graph is an integer model: no float weights to compress, and compressing its
    surrogate would quantize twice) and a fp16/bf16 one (its weights are already rounded; a second
    rounding or pruning of them is not a compression of the model the file names as its base)."""
    rec = model.info.extra.get("compression")
    if not isinstance(rec, dict):
        return None
    try:
        base = Method(str(rec.get("method")))
    except ValueError:
        base = None
    base_spec = printable(rec.get("base_spec") or "the base model")
    if base is None or base.quantized:
        kind = "an int8" if base is not None else "a compressed"
        raise CompressionError(f"{printable(spec)} is {kind} variant ({printable(rec.get('method'))}) and cannot be compressed again; compress the float base model ({base_spec}) with {method.name} instead.")
    if not base.pruned:
        raise CompressionError(f"{printable(spec)} is a {base.value} variant (weights already rounded) and cannot be compressed again; compress the float base model ({base_spec}) with {method.name} instead.")
    return rec


def compress(cfg: CompressConfig) -> CompressResult:
    """Compress the model of ``cfg`` with ``cfg.method``; write the variant file and return its record.

    A pruned (float32) variant may be compressed again (its record is kept as ``base_compression``);
    an int8, fp16 or bf16 variant may not (:func:`check_recompression`)."""
    check_options(cfg)
    if cfg.method.method.quantized:
        require_torchao()  # before any model or data is loaded
    model = load_model(cfg.model_spec, LoadOptions(**{**cfg.load.__dict__, "device": "cpu"}))
    base_record = check_recompression(model, cfg.model_spec, cfg.method)  # before the net is touched: an exported int8 graph cannot even .eval()
    method = cfg.method.method
    # the data each method needs, resolved (and checked) before the output path is judged and before any work
    cal: Dataset | None = None
    cal_record: dict[str, Any] | None = None
    if method is Method.INT8_STATIC:
        cal, cal_record = calibration_data(model, cfg)
    elif method is Method.QAT or (method.pruned and cfg.epochs):
        cal, cal_record = calibration_data(model, cfg, limit=False)
        # fine-tuning reads the labels: index the model's classes (folder: by name, as defend does) or refuse
        cal = cal.match_classes(model.info.class_names, model.num_classes)
        cal.check_labels(model.num_classes)
    check_out_path(cfg.out, model)
    net = model.net.cpu().float().eval()
    record: dict[str, Any] = {"method": method.value, "sparsity": cfg.method.sparsity, "base_spec": cfg.model_spec, "base_sha256": model.info.sha256,
                              "calibration": None, "torch": torch.__version__, "tool_version": __version__}
    if base_record is not None:
        record["base_compression"] = base_record
    if method in (Method.FP16, Method.BF16):
        state = net.to(torch.float16 if method is Method.FP16 else torch.bfloat16).state_dict()
    elif method.pruned:
        structured = method is Method.PRUNE_STRUCTURED
        pruned = (prune_structured if structured else prune_unstructured)(net, float(cfg.method.sparsity or 0.0))
        if not newly_zeroed(net, pruned):  # each layer rounds its share to nothing: a variant named pruned would be the base
            what = "channel of any conv layer" if structured else "weight"
            raise CompressionError(f"{method.value}:{cfg.method.sparsity:g} removes no {what} of this model (the fraction rounds to zero); "
                                   f"use a larger sparsity, e.g. {method.value}:0.1.")
        if cfg.epochs:
            assert cal is not None and cal_record is not None
            record["finetune"] = _finetune_pruned(pruned, model, cfg, cal, cal_record, structured=structured)
        record["measured_sparsity"] = sparsity(pruned)
        state = pruned.state_dict()
    elif method is Method.INT8_DYNAMIC:
        record.update(_int8_record(STACK_TORCHAO, "torch._int_mm (torchao Int8DynamicActivationInt8WeightConfig)"))
        state = net.state_dict()
    elif method is Method.INT8_STATIC:
        assert cal is not None
        record["calibration"] = cal_record
        prepared = prepare_fake_quant(net, model.input_shape)
        calibrate(prepared, _batches(model, cal, cfg.batch_size))
        record.update(_int8_record(STACK_PT2E, "onednn (X86InductorQuantizer, lowered)"))
        state = freeze(prepared).state_dict()
    else:  # qat: calibrate, then fine-tune the fake-quantized graph on the whole train split
        from ..compress.qat import finetune

        assert cal is not None
        train_data, record["calibration"] = cal, cal_record
        prepared = prepare_fake_quant(net, model.input_shape)
        calibrate(prepared, _batches(model, train_data.limit(cfg.calibration_n), cfg.batch_size))
        epochs = 2 if cfg.epochs is None else cfg.epochs
        finetune(prepared, model, prepare_data(model, train_data), epochs=epochs, batch_size=cfg.batch_size, seed=cfg.seed)
        record.update(_int8_record(STACK_PT2E, "onednn (X86InductorQuantizer, lowered)"))
        record["qat_epochs"] = epochs
        state = freeze(prepared).state_dict()
    info = model.info.to_dict()
    meta = {k: info.get(k) for k in META_KEYS}
    if method.quantized and meta.get("feature_layer"):  # an int8 variant's float layers live in its surrogate
        meta["feature_layer"] = f"surrogate.{meta['feature_layer']}"
    path = save_variant(state, cfg.out, metadata=meta, compression=record)
    log.info("wrote %s (%s) from %s", path, cfg.method.name, cfg.model_spec)
    return CompressResult(path, record)


__all__ = ["CompressConfig", "CompressResult", "calibration_data", "check_options", "check_out_path", "check_recompression", "compress"]
