"""Reading model files: format sniffing, state dicts, safetensors, TorchScript, ``torch.export`` and
pickled modules, and building the architecture a state dict needs (``--arch`` or file metadata).

Safety: state dicts are read with ``torch.load(weights_only=True)`` or safetensors. TorchScript,
``torch.export`` and pickled modules can run code, so they load only with ``trust_code=True``.
"""

from __future__ import annotations

import importlib
import json
import logging
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelLoadError, TrustError, UnknownNameError
from ..signing import sha256_file
from .architectures import ARCHITECTURES
from .factory import call_factory
from .graph_tap import prepare_exported
from .metadata import no_constant, read_sidecar, validate_metadata
from .options import LoadedNet, LoadOptions, first_line
from .probe import head_weight_name, output_width

log = logging.getLogger(__name__)


def _value_bytes(v: Any) -> bytes:
    """Bytes that identify one state-dict value: any tensor (bf16, quantized, on any device), else a
    stable text of the value (``get_extra_state`` objects, packed quantized params)."""
    if isinstance(v, torch.Tensor):
        t = v.detach().cpu()
        if t.is_quantized:
            scale = t.q_per_channel_scales().tolist() if t.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric) else t.q_scale()
            zero = t.q_per_channel_zero_points().tolist() if t.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric) else t.q_zero_point()
            return t.int_repr().contiguous().numpy().tobytes() + repr((str(t.dtype), scale, zero)).encode()
        if t.dtype in (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2) or t.is_complex() or t.layout != torch.strided:
            t = t.to_dense().float() if t.layout != torch.strided else t.float() if not t.is_complex() else torch.view_as_real(t)
        return str(t.dtype).encode() + t.contiguous().numpy().tobytes()
    if isinstance(v, (tuple, list)):
        return b"(" + b",".join(_value_bytes(x) for x in v) + b")"
    if isinstance(v, dict):
        return b"{" + b",".join(str(k).encode() + b":" + _value_bytes(x) for k, x in sorted(v.items(), key=lambda kv: str(kv[0]))) + b"}"
    return repr(v).encode()


def state_dict_sha256(net: nn.Module) -> str:
    """A sha256 of a network's weights and buffers (``state_dict``), whatever their kind."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(net.state_dict().items()):
        h.update(k.encode())
        h.update(_value_bytes(v))
    return h.hexdigest()


def infer_num_classes(net: nn.Module, input_shape: tuple[int, ...] | None = None) -> int:
    """Number of classes of ``net``: the width of its output on a dummy batch of ``input_shape``
    (guessed from the first layer when None, see :mod:`.probe`); when no probe forward works, the
    output size of the last linear layer (also inside TorchScript and torch.export modules)."""
    width = output_width(net, input_shape)
    if width is not None:
        return width
    linears = [m for m in net.modules() if isinstance(m, nn.Linear) or getattr(m, "original_name", None) == "Linear"]
    weight = getattr(linears[-1], "weight", None) if linears else None
    if isinstance(weight, torch.Tensor):
        return int(weight.shape[0])
    weights = [p for n, p in net.named_parameters() if n.endswith("weight") and p.ndim == 2]
    if weights:
        return int(weights[-1].shape[0])
    raise ModelLoadError("cannot infer the number of classes (no nn.Linear head); pass --num-classes.")


def _sidecar(path: Path) -> dict[str, Any]:
    return read_sidecar(path)


# -- architectures --------------------------------------------------------------------------------
def build_architecture(arch: str, *, num_classes: int | None, from_file: bool = False, opts: LoadOptions | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Build an untrained network from ``zoo-arch:NAME``, ``torchvision:NAME``, ``timm:NAME`` or
    ``factory:pkg.mod:fn`` (the last only when named by the user, never from file metadata)."""
    prefix, _, name = arch.partition(":")
    kw = {} if num_classes is None else {"num_classes": int(num_classes)}
    if prefix in ("zoo-arch", "zoo"):
        if name not in ARCHITECTURES:
            raise UnknownNameError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}.")
        return ARCHITECTURES[name](**kw), {}
    if prefix == "torchvision":
        import torchvision.models as tvm

        try:
            return tvm.get_model(name, weights=None, **kw), {"input_shape": (3, 224, 224)}
        except ValueError as exc:
            raise UnknownNameError(f"unknown torchvision architecture {name!r}; see torchvision.models.list_models().") from exc
    if prefix == "timm":
        timm = import_optional("timm", "pip install timm")
        try:
            net = timm.create_model(name, pretrained=False, **kw)
        except RuntimeError as exc:
            raise UnknownNameError(f"unknown timm architecture {name!r}; see timm.list_models().") from exc
        return net, timm_meta(net)
    if prefix == "factory":
        if from_file:
            raise TrustError(
                f"the model file asks robustlab to import and run Python code ({arch.split(':')[0]}: ...); robustlab never runs code that a file names. "
                "Load the weights with an architecture you choose: --arch torchvision:NAME, timm:NAME or zoo-arch:NAME."
            )
        net = call_factory(name, num_classes)
        return net, {}
    raise UnknownNameError(f"unknown architecture spec {arch!r}; use zoo-arch:NAME, torchvision:NAME, timm:NAME or factory:pkg.mod:fn.")


def import_optional(mod: str, hint: str) -> Any:
    try:
        return importlib.import_module(mod)
    except ImportError as exc:
        raise ModelLoadError(f"this model needs the package {mod!r}: {hint}.") from exc


def _last_sentence(exc: BaseException) -> str:
    """The first line of ``exc``, without torch.export's "Please check the warnings above" (they are silenced)."""
    return first_line(exc).split("Please check the warnings above")[0].strip() or type(exc).__name__


def timm_meta(net: nn.Module) -> dict[str, Any]:
    cfg = getattr(net, "pretrained_cfg", None) or {}
    out: dict[str, Any] = {}
    if "input_size" in cfg:
        out["input_shape"] = tuple(cfg["input_size"])
    if "mean" in cfg:
        out["mean"], out["std"] = tuple(cfg["mean"]), tuple(cfg["std"])
    return out


# -- files ------------------------------------------------------------------------------------------
def _sniff(path: Path) -> str:
    """Guess a file's format: safetensors, torchscript, export, or torch-zip/legacy pickle."""
    if path.suffix == ".safetensors":
        return "safetensors"
    if path.suffix == ".pt2":
        return "export"
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except zipfile.BadZipFile as exc:
            raise ModelLoadError(f"{path} is corrupt ({exc}); re-save or re-download the file.") from exc
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
        if any(n.endswith("serialized_exported_program.json") or n.endswith(".json") and "/models/" in n for n in names):
            return "export"
    return "torch"


def not_a_file(path: Path) -> str:
    """The one-line error for a model path that is not a readable file."""
    if path.is_dir():
        return f"model path {path} is a folder, not a model file; pass the weights file inside it (e.g. {path / 'model.safetensors'})."
    if path.exists():
        return f"model path {path} is not a regular file; pass a weights file (.safetensors, .pt, .pth)."
    return f"model file {path} does not exist; check the path."


def load_path(path: Path, opts: LoadOptions, *, fmt: str | None) -> LoadedNet:
    if not path.is_file():
        raise ModelLoadError(not_a_file(path))
    fmt = fmt or _sniff(path)
    sha = sha256_file(path)
    base = {"path": str(path), "sha256": sha}
    if fmt in ("torchscript", "export", "pickle") and not opts.trust_code:
        raise TrustError(
            f"{path.name} is a {fmt} file, which can run arbitrary code when loaded; robustlab refuses it unless you pass --trust-code (only for files you trust). Safer: save a state dict and pass --arch."
        )
    if fmt == "torchscript":
        try:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                net = torch.jit.load(str(path), map_location="cpu")  # type: ignore[no-untyped-call]
        except RuntimeError as exc:
            raise ModelLoadError(f"cannot load TorchScript file {path} ({first_line(exc)}); is it corrupt or truncated?") from exc
        return LoadedNet(net, {**_sidecar(path), **base, "format": "torchscript"})
    if fmt == "export":
        quiet = logging.getLogger("torch.export")  # it logs a whole traceback before raising on a damaged file
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)
        try:
            ep = torch.export.load(str(path))
        except (RuntimeError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise ModelLoadError(f"cannot load torch.export file {path} ({_last_sentence(exc)}); is it corrupt, truncated or not a torch.export file?") from exc
        finally:
            quiet.setLevel(level)
        net = prepare_exported(ep.module(), path.name)  # warned about if exported in training mode; features: the input of its last linear op
        return LoadedNet(net, {**_sidecar(path), **base, "format": "torch.export"})
    if fmt == "safetensors":
        sd, meta = _read_safetensors(path)
        return _from_saved_keys(path, sd, {**_sidecar(path), **meta}, opts, base, "safetensors")
    # torch zip or legacy file: try safe loading first
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        with open(path, "rb") as fh:
            head = fh.read(2)
        # torch words it "Unsupported global: GLOBAL m.C ..." or "... unsupported GLOBAL posix.system whose module posix is blocked"
        said = str(exc).lower()
        pickled_object = "unsupported global" in said or "unsupported class" in said or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"))
        if pickled_object and not opts.trust_code:
            called = re.search(r"GLOBAL ([A-Za-z_][\w.]*)", str(exc))
            what = f" (it refers to {called.group(1)})" if called else " (e.g. a whole nn.Module)"
            raise TrustError(
                f"{path.name} contains a pickled Python object{what}, which runs code when loaded; robustlab refuses it unless you pass --trust-code (only for files you trust). Safer: save model.state_dict() and pass --arch."
            ) from exc
        if opts.trust_code and ("weights_only" in str(exc) or pickled_object):
            return _load_pickle(path, base)
        if "weights_only" in str(exc) or "Weights only" in str(exc):
            raise ModelLoadError(
                f"{path.name} is not a recognised model file (not safetensors, a PyTorch state dict, TorchScript or torch.export); it may be corrupt, truncated or another format."
            ) from exc
        raise ModelLoadError(f"{path} is not a valid checkpoint ({first_line(exc)}); is it corrupt or truncated?") from exc
    except Exception as exc:  # noqa: BLE001 - the unpickler raises arbitrary errors (IndexError, KeyError...) on junk
        raise ModelLoadError(f"cannot read {path} as a PyTorch checkpoint ({first_line(exc)}); the file is corrupt or truncated: re-save or re-download it.") from exc
    if fmt == "pickle" or isinstance(obj, nn.Module):
        return LoadedNet(obj, {**_sidecar(path), **base, "format": "pickle"})
    sd, meta = unwrap_checkpoint(obj, path)
    return _from_saved_keys(path, sd, {**_sidecar(path), **meta}, opts, base, "state_dict")


def _from_saved_keys(path: Path, sd: dict[str, torch.Tensor], meta: dict[str, Any], opts: LoadOptions, base: dict[str, Any], fmt: str) -> LoadedNet:
    """The weights with their keys as saved, else without the prefix a DataParallel/DDP or
    torch.compile wrapper put on every key: as saved first, since an architecture may hold its
    network in a submodule named ``module``. A file that fits neither is reported by how its keys
    without the prefix misfit."""
    bare = strip_wrapper_prefixes(sd)
    try:
        return _from_state_dict(path, sd, meta, opts, base, fmt)
    except ModelLoadError:
        if bare is sd:
            raise
    return _from_state_dict(path, bare, meta, opts, base, fmt)


def _load_pickle(path: Path, base: dict[str, Any]) -> LoadedNet:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ModuleNotFoundError) as exc:
        raise ModelLoadError(f"cannot unpickle {path} ({first_line(exc)}); the classes it needs must be importable.") from exc
    if not isinstance(obj, nn.Module):
        raise ModelLoadError(f"{path} holds a {type(obj).__name__}, not an nn.Module.")
    return LoadedNet(obj, {**_sidecar(path), **base, "format": "pickle"})



def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import SafetensorError, safe_open

    try:
        with open(path, "rb") as fh:  # safetensors takes UTF-8 paths only: a non-UTF-8 name is read through its descriptor
            name = str(path) if str(path).isprintable() and not any(0xD800 <= ord(c) <= 0xDFFF for c in str(path)) else f"/proc/self/fd/{fh.fileno()}"
            with safe_open(name, framework="pt") as f:
                meta = f.metadata() or {}
                sd = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path} as safetensors ({first_line(exc)}); the file is corrupt or truncated.") from exc
    if "robustlab" not in meta:
        return sd, {}
    try:
        info = json.loads(meta["robustlab"], parse_constant=no_constant)
    except (ValueError, RecursionError) as exc:
        raise ModelLoadError(f"the 'robustlab' metadata in the safetensors header of {path.name} is not valid JSON ({first_line(exc)}); re-save the file or pass the metadata as flags.") from exc
    return sd, validate_metadata(info, f"the safetensors header of {path.name}")


def unwrap_checkpoint(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    meta: dict[str, Any] = {}
    if isinstance(obj, dict):
        if "robustlab" in obj:
            meta = validate_metadata(obj["robustlab"], f"the 'robustlab' entry of {path.name}")
        for key in ("state_dict", "model_state_dict", "model", "net", "ema"):
            if isinstance(obj.get(key), dict) and obj[key] and all(isinstance(v, torch.Tensor) for v in obj[key].values()):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"{path} does not hold a state dict (a mapping of parameter names to tensors); save model.state_dict().")
    return dict(obj), meta


def strip_wrapper_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the key prefix that a wrapper adds to every key of the model it wraps: ``module.``
    (nn.DataParallel / DistributedDataParallel) and ``_orig_mod.`` (torch.compile), in any nesting.
    A prefix that only some keys carry is kept (it names a real submodule)."""
    while sd and (p := next((p for p in ("module.", "_orig_mod.") if all(k.startswith(p) for k in sd)), None)):
        sd = {k[len(p):]: v for k, v in sd.items()}
    return sd


def _build_for_weights(arch: str, sd: dict[str, torch.Tensor], *, from_file: bool, opts: LoadOptions, input_shape: tuple[int, ...] | None) -> tuple[nn.Module, dict[str, Any], int | None]:
    """Build ``arch`` with as many classes as the head in ``sd`` has: build it with its default head,
    find that head (the layer that computes the logits in a probe forward, else the last 2-D weight in
    the architecture's registration order; never the file's key order, which safetensors sorts by
    name), read the class count from the same key in ``sd`` and rebuild if it differs."""
    try:
        net, arch_meta = build_architecture(arch, num_classes=None, from_file=from_file, opts=opts)
    except ModelLoadError:  # e.g. a factory whose num_classes has no default: read the weights alone
        k = _classes_from_weights(sd)
        net, arch_meta = build_architecture(arch, num_classes=k, from_file=from_file, opts=opts)
        return net, arch_meta, k
    own = net.state_dict()
    key = head_weight_name(net, input_shape or arch_meta.get("input_shape"))
    if key is None or key not in sd or sd[key].ndim < 2:
        key = next((n for n in reversed(own) if n.endswith("weight") and own[n].ndim == 2 and n in sd and sd[n].ndim == 2), None)
    k = int(sd[key].shape[0]) if key is not None else _classes_from_weights(sd)
    if k is None or (key is not None and key in own and int(own[key].shape[0]) == k):
        return net, arch_meta, k
    net, arch_meta = build_architecture(arch, num_classes=k, from_file=from_file, opts=opts)
    return net, arch_meta, k


def _classes_from_weights(sd: dict[str, torch.Tensor]) -> int | None:
    """Class count from a state dict alone: the rows of the 2-D weight whose output feeds no other
    2-D weight (its row count is no other one's input width), the last such in the file's order."""
    mats = [(n, v) for n, v in sd.items() if n.endswith("weight") and v.ndim == 2]
    if not mats:
        return None
    inputs = {int(v.shape[1]) for _, v in mats}
    leaves = [v for _, v in mats if int(v.shape[0]) not in inputs]
    return int((leaves or [v for _, v in mats])[-1].shape[0])


def misfit(net: nn.Module, sd: dict[str, torch.Tensor]) -> str:
    """How ``sd`` differs from ``net``'s own state dict, in one line: counts and the first three
    missing keys, unexpected keys and size mismatches (empty when the keys and shapes agree)."""
    own = net.state_dict()

    def few(items: list[str]) -> str:
        return ", ".join(items[:3]) + (", ..." if len(items) > 3 else "")

    missing = [n for n in own if n not in sd]
    unexpected = [n for n in sd if n not in own]
    sizes = [f"{n}: {tuple(sd[n].shape)} in the file, {tuple(own[n].shape)} in the model" for n in own if n in sd and tuple(sd[n].shape) != tuple(own[n].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} key(s) of the model missing from the file ({few(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s) in the file ({few(unexpected)})")
    if sizes:
        parts.append(f"{len(sizes)} size mismatch(es) ({few(sizes)})")
    return "; ".join(parts)


def _from_state_dict(path: Path, sd: dict[str, torch.Tensor], meta: dict[str, Any], opts: LoadOptions, base: dict[str, Any], fmt: str) -> LoadedNet:
    arch = opts.arch
    from_file = False
    if arch is None:
        arch = meta.get("architecture")
        from_file = True
    if not arch:
        raise ModelLoadError(f"{path.name} is a state dict (weights only); say which architecture it belongs to with --arch, e.g. --arch torchvision:resnet18 or --arch factory:my_pkg.models:build.")
    num_classes = opts.overrides.get("num_classes") or meta.get("num_classes")
    if num_classes is None:
        shape = opts.overrides.get("input_shape") or meta.get("input_shape")
        net, arch_meta, num_classes = _build_for_weights(arch, sd, from_file=from_file, opts=opts, input_shape=shape)
    else:
        net, arch_meta = build_architecture(arch, num_classes=num_classes, from_file=from_file, opts=opts)
    if meta.get("compression") is not None:  # a robustlab compress variant: rebuild its recorded recipe
        from ..compress.variant import rebuild

        shape = opts.overrides.get("input_shape") or meta.get("input_shape") or arch_meta.get("input_shape")
        net = rebuild(net, meta["compression"], sd, input_shape=tuple(shape) if shape else None, source=path.name)
    else:
        own = net.state_dict()
        cast = [k for k, v in sd.items() if k in own and own[k].is_floating_point() and not v.is_floating_point()]
        if cast:  # load_state_dict would convert them silently: integer weights are not the model's
            raise ModelLoadError(f"the weights in {path.name} hold integer tensors where architecture {arch} has floating-point ones "
                                 f"({cast[0]}: {sd[cast[0]].dtype}); save the floating-point weights (a quantized model: `robustlab compress`).")
        try:
            net.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            why = misfit(net, sd) or first_line(exc)
            given = opts.overrides.get("num_classes")
            how = (f"--num-classes {given} does not match them: leave it out, or pass the class count the weights were trained with" if given is not None
                   else "pass the architecture the weights were saved from with --arch (and --num-classes if only the head differs)")
            raise ModelLoadError(f"the weights in {path.name} do not fit architecture {arch}: {why}; {how}.") from exc
    info = {**arch_meta, **meta, **base, "format": fmt, "architecture": arch}
    if num_classes is not None:
        info["num_classes"] = num_classes
    return LoadedNet(net, info)


# -- prefixes ------------------------------------------------------------------------------------------
