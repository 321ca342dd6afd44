"""Model specs -> :class:`RobustModel`.

Spec prefixes (like timm's ``hf-hub:``): ``zoo:NAME``, ``state-dict:PATH`` (with ``--arch``),
``torchvision:NAME``, ``timm:NAME``, ``factory:pkg.mod:fn``, ``torchscript:PATH``, ``export:PATH``
(``torch.export`` ``.pt2``), ``pickle:PATH`` (a whole pickled ``nn.Module``), ``robustbench:NAME``
and third-party prefixes from the entry-point group ``robustlab.models``. A bare path is sniffed.

Safety: state dicts are read with ``torch.load(weights_only=True)`` or safetensors. TorchScript,
``torch.export`` and pickled modules can run code, so they load only with ``trust_code=True``
(``--trust-code``); the flag is recorded in the scorecard. A model file's metadata may name only
architectures robustlab knows (``zoo``/``torchvision``/``timm``), never a Python import path.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ..errors import ModelLoadError, TrustError, UnknownNameError
from ..registry import Registry
from ..signing import sha256_file
from .architectures import ARCHITECTURES
from .metadata import META_KEYS as _META_KEYS
from .metadata import check_consistency, no_constant, read_sidecar, validate_metadata
from .wrapper import ModelInfo, RobustModel

log = logging.getLogger(__name__)

#: Model spec prefixes (``--model PREFIX:ARG``). Built-ins are registered with :func:`model_loader`
#: (``load(arg, opts) -> _Loaded``); third parties use the entry-point group ``robustlab.models``: a
#: function ``load(arg: str, *, device, download) -> nn.Module | RobustModel``, used as ``--model name:arg``.
MODEL_LOADERS: "Registry[ModelLoader | Callable[..., Any]]" = Registry("model loader", group="robustlab.models", package="robustlab.models")
MODEL_PLUGINS = MODEL_LOADERS  # the former name


@dataclass(frozen=True)
class ModelLoader:
    """A built-in spec prefix: ``load(arg, opts) -> _Loaded`` and a one-line description."""

    load: "Callable[[str, LoadOptions], _Loaded]"
    description: str


def model_loader(prefix: str, description: str) -> "Callable[[Callable[[str, LoadOptions], _Loaded]], Callable[[str, LoadOptions], _Loaded]]":
    """Decorator: register ``load(arg, opts) -> _Loaded`` as the model spec prefix ``prefix``."""

    def deco(fn: "Callable[[str, LoadOptions], _Loaded]") -> "Callable[[str, LoadOptions], _Loaded]":
        MODEL_LOADERS.add(prefix, ModelLoader(fn, description))
        return fn

    return deco


def prefixes() -> dict[str, str]:
    """``{prefix: description}`` of every model loader (built-ins and entry-point plugins)."""
    return {n: (o.description if isinstance(o, ModelLoader) else "third-party plugin (entry point robustlab.models)") for n, o in MODEL_LOADERS.items()}


@dataclass
class LoadOptions:
    """Everything besides the spec that affects loading (CLI flags win over file metadata)."""

    arch: str | None = None
    trust_code: bool = False
    download: bool = False
    model_dir: str | None = None
    device: str = "cpu"
    overrides: dict[str, Any] = field(default_factory=dict)  # ModelInfo fields from the CLI


@dataclass
class _Loaded:
    net: nn.Module
    info: dict[str, Any]


def load_model(spec: str, options: LoadOptions | None = None, **kw: Any) -> RobustModel:
    """Resolve ``spec`` to a :class:`RobustModel` on ``options.device`` in eval mode."""
    opts = options or LoadOptions(**kw)
    opts.overrides = validate_metadata(opts.overrides, "the command line (--num-classes, --mean, --std, ...)")
    prefix, sep, rest = spec.partition(":")
    path = Path(spec).expanduser()
    if path.exists() and (not sep or len(prefix) == 1):
        loaded = _load_path(path, opts, fmt=None)
    elif sep and prefix in MODEL_LOADERS:
        loader = MODEL_LOADERS.get(prefix)
        loaded = loader.load(rest, opts) if isinstance(loader, ModelLoader) else _plugin(prefix, loader, rest, opts)
    elif not sep and path.suffix:
        raise ModelLoadError(f"model file {path} does not exist; check the path.")
    else:
        import difflib

        known = MODEL_LOADERS.names()
        close = difflib.get_close_matches(prefix, known, 1)
        hint = f" Did you mean {close[0]}:?" if close else ""
        raise UnknownNameError(f"unknown model spec {spec!r}.{hint} Use a file path or one of the prefixes {', '.join(p + ':' for p in known)} (see `robustlab models`).")
    return _wrap(spec, loaded, opts)


# -- wrapping and metadata ------------------------------------------------------------------------
def _wrap(spec: str, loaded: _Loaded, opts: LoadOptions) -> RobustModel:
    if isinstance(loaded.net, RobustModel):
        model = loaded.net
        info = model.info.with_overrides(**{k: v for k, v in opts.overrides.items() if k in _META_KEYS})
        check_consistency(info.to_dict())
        model = RobustModel(model.net, info)
    else:
        meta = {k: v for k, v in loaded.info.items() if k in _META_KEYS and v is not None}
        meta.update({k: v for k, v in opts.overrides.items() if v is not None})
        if "num_classes" not in meta:
            meta["num_classes"] = _infer_num_classes(loaded.net)
        for k in ("input_shape", "bounds", "mean", "std", "class_names"):
            if meta.get(k) is not None:
                meta[k] = tuple(meta[k])
        check_consistency(meta)
        info = ModelInfo(
            spec=spec,
            format=loaded.info.get("format", "unknown"),
            sha256=loaded.info.get("sha256"),
            path=loaded.info.get("path"),
            trusted=opts.trust_code,
            **{k: meta.get(k) for k in _META_KEYS if k in meta},  # type: ignore[arg-type]
        )
        model = RobustModel(loaded.net, info)
    if model.info.feature_layer:
        model._resolve_feature_module()  # a misspelt --feature-layer fails now, not in the OOD check
    try:
        return model.to(torch.device(opts.device)).eval()
    except NotImplementedError:  # torch.export modules support neither .eval() nor always .to()
        return model


def _infer_num_classes(net: nn.Module) -> int:
    """Output size of the last linear layer (also inside TorchScript and torch.export modules)."""
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
        timm = _import("timm", "pip install timm")
        try:
            net = timm.create_model(name, pretrained=False, **kw)
        except RuntimeError as exc:
            raise UnknownNameError(f"unknown timm architecture {name!r}; see timm.list_models().") from exc
        return net, _timm_meta(net)
    if prefix == "factory":
        if from_file:
            raise TrustError(
                f"the model file asks robustlab to import and run Python code ({arch.split(':')[0]}: ...); robustlab never runs code that a file names. "
                "Load the weights with an architecture you choose: --arch torchvision:NAME, timm:NAME or zoo-arch:NAME."
            )
        net = _call_factory(name, num_classes)
        return net, {}
    raise UnknownNameError(f"unknown architecture spec {arch!r}; use zoo-arch:NAME, torchvision:NAME, timm:NAME or factory:pkg.mod:fn.")


def _import(mod: str, hint: str) -> Any:
    try:
        return importlib.import_module(mod)
    except ImportError as exc:
        raise ModelLoadError(f"this model needs the package {mod!r}: {hint}.") from exc


def _call_factory(target: str, num_classes: int | None) -> nn.Module:
    mod_name, _, fn_name = target.partition(":")
    if not mod_name or not fn_name:
        raise ModelLoadError(f"factory spec must be factory:package.module:function, got factory:{target}.")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as exc:
        raise ModelLoadError(f"cannot import {mod_name!r} for factory:{target} ({exc}); is it on PYTHONPATH?") from exc
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise ModelLoadError(f"{mod_name} has no function {fn_name!r}; check factory:{target}.")
    try:
        try:
            net = fn(num_classes=num_classes) if num_classes is not None else fn()
        except TypeError:
            net = fn()
    except Exception as exc:  # noqa: BLE001 - the user's own function failed: say so in one line
        raise ModelLoadError(f"factory:{target} raised {type(exc).__name__}: {_first_line(exc)}; fix the function or its arguments.") from exc
    if not isinstance(net, nn.Module):
        raise ModelLoadError(f"factory:{target} returned {type(net).__name__}, not a torch.nn.Module.")
    return net


def _timm_meta(net: nn.Module) -> dict[str, Any]:
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


def _load_path(path: Path, opts: LoadOptions, *, fmt: str | None) -> _Loaded:
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist; check the path.")
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
                net = torch.jit.load(str(path), map_location="cpu")
        except RuntimeError as exc:
            raise ModelLoadError(f"cannot load TorchScript file {path} ({_first_line(exc)}); is it corrupt or truncated?") from exc
        return _Loaded(net, {**_sidecar(path), **base, "format": "torchscript"})
    if fmt == "export":
        try:
            ep = torch.export.load(str(path))
        except (RuntimeError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise ModelLoadError(f"cannot load torch.export file {path} ({_first_line(exc)}); is it corrupt or truncated?") from exc
        return _Loaded(ep.module(), {**_sidecar(path), **base, "format": "torch.export"})
    if fmt == "safetensors":
        sd, meta = _read_safetensors(path)
        return _from_state_dict(path, sd, {**_sidecar(path), **meta}, opts, base, "safetensors")
    # torch zip or legacy file: try safe loading first
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        with open(path, "rb") as fh:
            head = fh.read(2)
        pickled_object = "Unsupported global" in str(exc) or "Unsupported class" in str(exc) or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"))
        if pickled_object and not opts.trust_code:
            raise TrustError(
                f"{path.name} contains a pickled Python object (e.g. a whole nn.Module), which runs code when loaded; robustlab refuses it unless you pass --trust-code (only for files you trust). Safer: save model.state_dict() and pass --arch."
            ) from exc
        if opts.trust_code and ("weights_only" in str(exc) or pickled_object):
            return _load_pickle(path, base)
        if "weights_only" in str(exc) or "Weights only" in str(exc):
            raise ModelLoadError(
                f"{path.name} is not a recognised model file (not safetensors, a PyTorch state dict, TorchScript or torch.export); it may be corrupt, truncated or another format."
            ) from exc
        raise ModelLoadError(f"{path} is not a valid checkpoint ({_first_line(exc)}); is it corrupt or truncated?") from exc
    except Exception as exc:  # noqa: BLE001 - the unpickler raises arbitrary errors (IndexError, KeyError...) on junk
        raise ModelLoadError(f"cannot read {path} as a PyTorch checkpoint ({_first_line(exc)}); the file is corrupt or truncated: re-save or re-download it.") from exc
    if fmt == "pickle" or isinstance(obj, nn.Module):
        return _Loaded(obj, {**_sidecar(path), **base, "format": "pickle"})
    sd, meta = _unwrap_checkpoint(obj, path)
    return _from_state_dict(path, sd, {**_sidecar(path), **meta}, opts, base, "state_dict")


def _load_pickle(path: Path, base: dict[str, Any]) -> _Loaded:
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ModuleNotFoundError) as exc:
        raise ModelLoadError(f"cannot unpickle {path} ({_first_line(exc)}); the classes it needs must be importable.") from exc
    if not isinstance(obj, nn.Module):
        raise ModelLoadError(f"{path} holds a {type(obj).__name__}, not an nn.Module.")
    return _Loaded(obj, {**_sidecar(path), **base, "format": "pickle"})


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    from safetensors import SafetensorError, safe_open

    try:
        with open(path, "rb") as fh:  # safetensors takes UTF-8 paths only: a non-UTF-8 name is read through its descriptor
            name = str(path) if str(path).isprintable() and not any(0xD800 <= ord(c) <= 0xDFFF for c in str(path)) else f"/proc/self/fd/{fh.fileno()}"
            with safe_open(name, framework="pt") as f:
                meta = f.metadata() or {}
                sd = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {path} as safetensors ({_first_line(exc)}); the file is corrupt or truncated.") from exc
    if "robustlab" not in meta:
        return sd, {}
    try:
        info = json.loads(meta["robustlab"], parse_constant=no_constant)
    except (ValueError, RecursionError) as exc:
        raise ModelLoadError(f"the 'robustlab' metadata in the safetensors header of {path.name} is not valid JSON ({_first_line(exc)}); re-save the file or pass the metadata as flags.") from exc
    return sd, validate_metadata(info, f"the safetensors header of {path.name}")


def _unwrap_checkpoint(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
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
    sd = {k.removeprefix("module."): v for k, v in obj.items()}
    return sd, meta


def _from_state_dict(path: Path, sd: dict[str, torch.Tensor], meta: dict[str, Any], opts: LoadOptions, base: dict[str, Any], fmt: str) -> _Loaded:
    arch = opts.arch
    from_file = False
    if arch is None:
        arch = meta.get("architecture")
        from_file = True
    if not arch:
        raise ModelLoadError(f"{path.name} is a state dict (weights only); say which architecture it belongs to with --arch, e.g. --arch torchvision:resnet18 or --arch factory:my_pkg.models:build.")
    num_classes = opts.overrides.get("num_classes") or meta.get("num_classes")
    if num_classes is None:
        heads = [k for k in sd if k.endswith(".weight") and sd[k].ndim == 2]
        num_classes = int(sd[heads[-1]].shape[0]) if heads else None
    net, arch_meta = build_architecture(arch, num_classes=num_classes, from_file=from_file, opts=opts)
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"the weights in {path.name} do not fit architecture {arch} ({_first_line(exc)}); check --arch and --num-classes.") from exc
    info = {**arch_meta, **meta, **base, "format": fmt, "architecture": arch}
    if num_classes is not None:
        info["num_classes"] = num_classes
    return _Loaded(net, info)


# -- prefixes ------------------------------------------------------------------------------------------
@model_loader("zoo", 'bundled models: zoo:digits-cnn, zoo:cifar10-resnet18')
def _zoo(name: str, opts: LoadOptions) -> _Loaded:
    from .zoo import ZOO

    if name not in ZOO:
        import difflib

        close = difflib.get_close_matches(name, list(ZOO), 2)
        raise UnknownNameError(f"unknown zoo model {name!r}{'; did you mean ' + ', '.join(close) + '?' if close else '.'} Known: {', '.join(ZOO)}.")
    entry = ZOO[name]
    path = entry.locate()
    sub = LoadOptions(**{**opts.__dict__, "arch": opts.arch or entry.architecture})
    loaded = _load_path(path, sub, fmt=None)
    loaded.info = {**entry.metadata, **loaded.info, "format": f"zoo ({loaded.info.get('format')})"}
    return loaded


@model_loader("state-dict", 'state-dict:PATH (.safetensors/.pt/.pth) with --arch torchvision:NAME|timm:NAME|factory:pkg.mod:fn|zoo-arch:NAME')
def _state_dict(rest: str, opts: LoadOptions) -> _Loaded:
    p = Path(rest).expanduser()
    if not p.is_file():
        raise ModelLoadError(f"model file {p} does not exist; check the path.")
    return _load_path(p, opts, fmt="safetensors" if p.suffix == ".safetensors" else "torch")


def _fmt_loader(fmt: str) -> Callable[[str, LoadOptions], _Loaded]:
    def load(rest: str, opts: LoadOptions) -> _Loaded:
        return _load_path(Path(rest).expanduser(), opts, fmt=fmt)

    return load


@model_loader("torchvision", 'torchvision:NAME (ImageNet weights from the local torch hub cache; --download to fetch)')
def _torchvision(name: str, opts: LoadOptions) -> _Loaded:
    import torchvision.models as tvm

    try:
        weights = tvm.get_model_weights(name).DEFAULT
    except ValueError as exc:
        raise UnknownNameError(f"unknown torchvision model {name!r}; see torchvision.models.list_models().") from exc
    hub = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not hub.is_file() and not opts.download:
        raise ModelLoadError(f"torchvision:{name} weights are not in the local cache ({hub}); pass --download to fetch them, or give a state dict with --arch torchvision:{name}.")
    net = tvm.get_model(name, weights=weights)
    t = weights.transforms()
    crop = getattr(t, "crop_size", [224])[0]
    return _Loaded(net, {
        "format": "torchvision", "sha256": _sha_or_none(hub), "path": str(hub), "num_classes": len(weights.meta["categories"]),
        "class_names": tuple(weights.meta["categories"]), "mean": tuple(t.mean), "std": tuple(t.std), "input_shape": (3, crop, crop),
        "dataset": "imagenet", "architecture": f"torchvision:{name}",
    })


def _sha_or_none(p: Path) -> str | None:
    return sha256_file(p) if p.is_file() else None


@model_loader("timm", 'timm:NAME (pretrained weights from the local Hugging Face cache; --download to fetch)')
def _timm(name: str, opts: LoadOptions) -> _Loaded:
    timm = _import("timm", "pip install timm")
    import os

    if not opts.download:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        net = timm.create_model(name, pretrained=True)
    except (RuntimeError, OSError, ValueError) as exc:
        raise ModelLoadError(f"timm:{name} could not be loaded offline ({_first_line(exc)}); pass --download to fetch its weights, or give a state dict with --arch timm:{name}.") from exc
    return _Loaded(net, {"format": "timm", **_timm_meta(net), "architecture": f"timm:{name}"})


@model_loader("factory", 'factory:pkg.mod:fn, a Python function returning an nn.Module (your own code)')
def _factory(target: str, opts: LoadOptions) -> _Loaded:
    net = _call_factory(target, opts.overrides.get("num_classes"))
    sd_hash = hashlib.sha256()
    for k, v in sorted(net.state_dict().items()):
        sd_hash.update(k.encode())
        sd_hash.update(v.detach().cpu().contiguous().numpy().tobytes() if v.dtype != torch.bfloat16 else v.float().numpy().tobytes())
    return _Loaded(net, {"format": "factory", "sha256": sd_hash.hexdigest(), "architecture": f"factory:{target}"})


@model_loader("robustbench", 'robustbench:NAME[:dataset[:threat]] from --model-dir (default ./models); --download to fetch')
def _robustbench(rest: str, opts: LoadOptions) -> _Loaded:
    from .robustbench_compat import load_robustbench

    return load_robustbench(rest, opts)


def _plugin(prefix: str, fn: Callable[..., Any], rest: str, opts: LoadOptions) -> _Loaded:
    obj = fn(rest, device=opts.device, download=opts.download)
    if not isinstance(obj, nn.Module):
        raise ModelLoadError(f"model plugin {prefix!r} returned {type(obj).__name__}, not an nn.Module.")
    return _Loaded(obj, {"format": f"plugin:{prefix}"})


for _fmt in ("torchscript", "export", "pickle"):
    model_loader(_fmt, {"torchscript": 'torchscript:PATH, needs --trust-code (can run code)', "export": 'export:PATH.pt2 (torch.export), needs --trust-code (can run code)', "pickle": 'pickle:PATH, a whole pickled nn.Module, needs --trust-code (runs code)'}[_fmt])(_fmt_loader(_fmt))
