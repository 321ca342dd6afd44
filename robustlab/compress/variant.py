"""Variant files: a compressed model as a safetensors state dict plus a recipe in its header.

The header's ``robustlab`` metadata carries the base model's contract (architecture, bounds,
mean/std, classes, input shape) and a ``compression`` record: method, sparsity, calibration data
(spec, count, sha256), the base model's sha256, the quantization stack (``pt2e``/``torchao``;
legacy files without one are FX graph mode), the int8 engine and the torch/torchao versions. Loading
builds the base architecture (one robustlab builds itself: never code named by a file), applies the
recorded recipe (cast, or re-trace and convert for int8) and loads the tensors, so a variant loads
without ``--trust-code``: nothing in the file is executed.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelLoadError
from .methods import CompressionError, CompressionSpec, Method
from . import pt2e
from .quantize import STACK_FX, STACK_PT2E, STACK_TORCHAO, QuantizedNet, cast, dynamic_integer, dynamic_surrogate

_DTYPES = {Method.FP16: torch.float16, Method.BF16: torch.bfloat16}
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_PRUNABLE = (*_CONVS, nn.Linear)


def save_variant(state: dict[str, torch.Tensor], path: Path, *, metadata: dict[str, Any], compression: dict[str, Any]) -> Path:
    """Write ``state`` with ``metadata`` (the base contract) and the ``compression`` record; atomic."""
    from safetensors.torch import save_file

    arch = str(metadata.get("architecture") or "")
    if arch.split(":", 1)[0] not in ("zoo-arch", "torchvision", "timm"):
        raise CompressionError(
            f"the base model's architecture {arch or '(none)'!r} cannot be named in a file that loads without --trust-code; "
            "compress a model with a zoo-arch:, torchvision: or timm: architecture (e.g. a state dict with --arch torchvision:resnet18)."
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().clone().contiguous() for k, v in state.items()}
    meta = {k: (list(v) if isinstance(v, tuple) else v) for k, v in metadata.items() if v is not None}
    meta["compression"] = compression
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)  # same folder: the replace is atomic
    os.close(fd)
    tmp = Path(name)
    try:
        save_file(sd, str(tmp), metadata={"robustlab": json.dumps(meta, sort_keys=True), "format": "pt"})
        tmp.chmod(0o644)
        tmp.replace(path)  # an existing variant file is overwritten only once the new one is complete
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _dtype_names(dtypes: set[torch.dtype]) -> str:
    names = sorted(str(d).removeprefix("torch.") for d in dtypes)
    return " and ".join(names) if names else "(none)"


def check_tensors(method: Method, sparsity: float | None, net: nn.Module, sd: dict[str, torch.Tensor], *, source: str) -> None:
    """Refuse (:class:`ModelLoadError`) a file whose tensors are not what its recipe writes: fp16/bf16
    files hold float16/bfloat16 floating tensors, every other kind float32 ones; a pruned file
    (loaded into ``net``) has at least the recorded ``sparsity`` of zeros, up to the rounding of
    ``torch.nn.utils.prune`` (``round(s * n)`` entries, or channels per conv layer for structured
    pruning). Called on the tensors as stored, before anything is cast."""
    want = _DTYPES.get(method, torch.float32)
    found = {t.dtype for t in sd.values() if t.is_floating_point()}
    if found and found != {want}:
        raise ModelLoadError(f"the file's tensors are {_dtype_names(found)} but its record says {method.value} ({_dtype_names({want})} tensors): "
                             f"{source} was edited or damaged; re-create it with robustlab compress.")
    if not method.pruned or sparsity is None:
        return
    if method is Method.PRUNE_UNSTRUCTURED:
        ws = [m.weight for m in net.modules() if isinstance(m, _PRUNABLE) and isinstance(getattr(m, "weight", None), torch.Tensor)]
        total = sum(w.numel() for w in ws)
        zeros = sum(int((w == 0).sum()) for w in ws)
        if total and zeros < sparsity * total - 0.5 - 1e-9:
            raise ModelLoadError(f"the file's tensors are {zeros / total:.4g} sparse (zero conv/linear weights) but its record says prune-unstructured:{sparsity:g}: "
                                 f"{source} was edited or damaged; re-create it with robustlab compress.")
        return
    for mname, m in net.named_modules():
        w = getattr(m, "weight", None)
        if isinstance(m, _CONVS) and isinstance(w, torch.Tensor) and w.shape[0]:
            channels = int(w.shape[0])
            removed = int((w.detach().flatten(1) == 0).all(dim=1).sum())
            if removed < sparsity * channels - 0.5 - 1e-9:
                raise ModelLoadError(f"the file's tensors have {removed} of {channels} output channels of {mname} removed ({removed / channels:.4g}) but its record says "
                                     f"prune-structured:{sparsity:g}: {source} was edited or damaged; re-create it with robustlab compress.")


_HEX64 = re.compile(r"[0-9a-f]{64}")
_TEXT_KEYS = ("base_spec", "stack", "engine", "torchao", "torch", "tool_version")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_record(rec: Any, *, source: str, depth: int = 0) -> None:
    """Refuse (:class:`ModelLoadError`) a ``compression`` record whose known keys have the wrong types, as
    :func:`robustlab.pipelines.compress.compress` never writes them: ``method`` a string; ``sparsity`` and
    ``measured_sparsity`` numbers (or null), never strings; ``base_sha256`` null or 64 lowercase hex
    digits (what a variant's base is checked against); ``calibration``, ``finetune`` and ``base_compression``
    mappings (or null), the last one a record itself. Unknown keys are kept (records of later versions)."""
    def bad(what: str) -> ModelLoadError:
        where = "'base_compression' of " * depth
        return ModelLoadError(f"the {where}'compression' record in {source} {what}; the file was edited or damaged: re-create it with robustlab compress.")

    if not isinstance(rec, dict) or not isinstance(rec.get("method"), str):
        raise bad("is not a mapping with a 'method'")
    for k in ("sparsity", "measured_sparsity"):
        if rec.get(k) is not None and not (_number(rec[k]) and 0 <= rec[k] <= 1):
            raise bad(f"has {k} {ascii(rec[k])[:40]}, not a number in [0, 1]")
    sha = rec.get("base_sha256")
    if sha is not None and not (isinstance(sha, str) and _HEX64.fullmatch(sha)):
        raise bad(f"has base_sha256 {ascii(sha)[:40]}, not 64 hex digits")
    for k in _TEXT_KEYS:
        if rec.get(k) is not None and not isinstance(rec[k], str):
            raise bad(f"has {k} {ascii(rec[k])[:40]}, not a string")
    for k in ("calibration", "finetune", "base_compression"):
        if rec.get(k) is not None and not isinstance(rec[k], dict):
            raise bad(f"has {k} {ascii(rec[k])[:40]}, not a mapping")
    cal = rec.get("calibration") or {}
    if cal.get("n") is not None and not (isinstance(cal["n"], int) and not isinstance(cal["n"], bool) and cal["n"] >= 0):
        raise bad(f"has calibration n {ascii(cal['n'])[:40]}, not a count")
    if rec.get("base_compression") is not None:
        if depth >= 8:
            raise bad("nests more than 8 base_compression records")
        check_record(rec["base_compression"], source=source, depth=depth + 1)


def rebuild(net: nn.Module, compression: Any, sd: dict[str, torch.Tensor], *, input_shape: tuple[int, ...] | None, source: str) -> nn.Module:
    """The compressed network recorded in ``compression`` from the untrained base ``net`` and the file's tensors ``sd``."""
    check_record(compression, source=source)
    spec_text = compression["method"] + (f":{compression['sparsity']}" if compression.get("sparsity") is not None else "")
    try:
        spec = CompressionSpec.parse(spec_text)
    except CompressionError as exc:
        raise ModelLoadError(f"{source}: {exc}") from exc
    method = spec.method
    check_tensors(method, None, net, sd, source=source)  # dtypes first: a load would cast them silently
    try:
        if method in _DTYPES:
            dtype = _DTYPES[method]
            net.to(dtype).load_state_dict(sd, strict=True)
            return cast(net, dtype)
        if method.pruned:
            net.load_state_dict(sd, strict=True)
            check_tensors(method, spec.sparsity, net, sd, source=source)
            return net
        stack = compression.get("stack", STACK_FX)  # files from before the PT2E move carry no stack: FX graph mode
        if stack == STACK_FX:
            return _rebuild_fx(net, method, sd, input_shape=input_shape)
        if stack not in (STACK_PT2E, STACK_TORCHAO):
            raise ModelLoadError(f"{source} was quantized with an unknown stack {stack!r}; re-create the file with robustlab compress.")
        if method is Method.INT8_DYNAMIC:
            net.load_state_dict(sd, strict=True)
            integer = dynamic_integer(net)
            return QuantizedNet(integer, dynamic_surrogate(net, integer))
        prepared = pt2e.prepare_fake_quant(net, input_shape)
        prepared.load_state_dict(sd, strict=True)
        pt2e.freeze(prepared)
        return QuantizedNet(pt2e.to_integer(prepared, input_shape), prepared)
    except (RuntimeError, KeyError) as exc:
        msg = " ".join(str(exc).split())[:200]
        raise ModelLoadError(f"the tensors in {source} do not fit its {method.value} recipe on the recorded architecture ({msg}); the file is damaged or was edited.") from exc


def _rebuild_fx(net: nn.Module, method: Method, sd: dict[str, torch.Tensor], *, input_shape: tuple[int, ...] | None) -> nn.Module:
    """LEGACY: an int8 file written by the FX graph mode path (deprecated ``torch.ao.quantization``), rebuilt as it was calibrated."""
    from . import quantize_fx as fx

    if method is Method.INT8_DYNAMIC:
        net.load_state_dict(sd, strict=True)
        integer = fx.dynamic_integer(net)
        return QuantizedNet(integer, dynamic_surrogate(net, integer))
    prepared = fx.prepare_fake_quant(net, input_shape)
    prepared.load_state_dict(sd, strict=True)
    fx.freeze(prepared)
    return QuantizedNet(fx.to_integer(prepared), prepared)


__all__ = ["check_record", "check_tensors", "rebuild", "save_variant"]
