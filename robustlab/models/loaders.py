"""Model specs -> :class:`RobustModel`.

Spec prefixes (like timm's ``hf-hub:``): ``zoo:NAME``, ``state-dict:PATH`` (with ``--arch``),
``torchvision:NAME``, ``timm:NAME``, ``factory:pkg.mod:fn``, ``torchscript:PATH``, ``export:PATH``
(``torch.export`` ``.pt2``), ``pickle:PATH`` (a whole pickled ``nn.Module``), ``robustbench:NAME``
and third-party prefixes from the entry-point group ``robustlab.models``. A bare path is sniffed.

Safety: state dicts are read with ``torch.load(weights_only=True)`` or safetensors. TorchScript,
``torch.export`` and pickled modules can run code, so they load only with ``trust_code=True``
(``--trust-code``); the flag is recorded in the scorecard. A model file's metadata may name only
architectures robustlab knows (``zoo``/``torchvision``/``timm``), never a Python import path.

This module maps specs to loaders (the registry :data:`MODEL_LOADERS`: built-ins and third-party) and
wraps the result; reading files lives in :mod:`.files`, the shared types in :mod:`.options`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ..errors import ModelLoadError, UnknownNameError
from ..registry import Registry
from ..signing import sha256_file
from .factory import call_factory
from .files import import_optional, infer_num_classes, load_path, timm_meta
from .metadata import META_KEYS as _META_KEYS
from .metadata import check_consistency, validate_metadata
from .options import LoadedNet, LoadOptions, first_line
from .wrapper import ModelInfo, RobustModel

__all__ = ["MODEL_LOADERS", "MODEL_PLUGINS", "ModelLoader", "LoadOptions", "LoadedNet", "load_model", "model_loader", "prefixes"]

log = logging.getLogger(__name__)

#: Model spec prefixes (``--model PREFIX:ARG``). Built-ins are registered with :func:`model_loader`
#: (``load(arg, opts) -> LoadedNet``); third parties use the entry-point group ``robustlab.models``: a
#: function ``load(arg: str, *, device, download) -> nn.Module | RobustModel``, used as ``--model name:arg``.
MODEL_LOADERS: "Registry[ModelLoader | Callable[..., Any]]" = Registry("model loader", group="robustlab.models", package="robustlab.models")
MODEL_PLUGINS = MODEL_LOADERS  # the former name


@dataclass(frozen=True)
class ModelLoader:
    """A built-in spec prefix: ``load(arg, opts) -> LoadedNet`` and a one-line description."""

    load: "Callable[[str, LoadOptions], LoadedNet]"
    description: str


def model_loader(prefix: str, description: str) -> "Callable[[Callable[[str, LoadOptions], LoadedNet]], Callable[[str, LoadOptions], LoadedNet]]":
    """Decorator: register ``load(arg, opts) -> LoadedNet`` as the model spec prefix ``prefix``."""

    def deco(fn: "Callable[[str, LoadOptions], LoadedNet]") -> "Callable[[str, LoadOptions], LoadedNet]":
        MODEL_LOADERS.add(prefix, ModelLoader(fn, description))
        return fn

    return deco


def prefixes() -> dict[str, str]:
    """``{prefix: description}`` of every model loader (built-ins and entry-point plugins)."""
    return {n: (o.description if isinstance(o, ModelLoader) else "third-party plugin (entry point robustlab.models)") for n, o in MODEL_LOADERS.items()}


def load_model(spec: str, options: LoadOptions | None = None, **kw: Any) -> RobustModel:
    """Resolve ``spec`` to a :class:`RobustModel` on ``options.device`` in eval mode."""
    opts = options or LoadOptions(**kw)
    opts.overrides = validate_metadata(opts.overrides, "the command line (--num-classes, --mean, --std, ...)")
    prefix, sep, rest = spec.partition(":")
    path = Path(spec).expanduser()
    if path.exists() and (not sep or len(prefix) == 1):
        loaded = load_path(path, opts, fmt=None)
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
def refuse_uninitialized(net: nn.Module, spec: str) -> None:
    """Refuse a network whose lazy modules (``nn.LazyLinear``, ...) have not made their weights yet."""
    from torch.nn.parameter import is_lazy

    lazy = [n for n, t in [*net.named_parameters(), *net.named_buffers()] if is_lazy(t)]
    if lazy:
        raise ModelLoadError(
            f"model {spec}: {len(lazy)} parameter(s) of lazy modules (e.g. nn.LazyLinear) are not initialised yet ({', '.join(lazy[:3])}), "
            "so there are no weights to evaluate; run one forward pass on a dummy batch (or load the weights) before returning or saving the model."
        )


def _wrap(spec: str, loaded: LoadedNet, opts: LoadOptions) -> RobustModel:
    refuse_uninitialized(loaded.net, spec)
    if isinstance(loaded.net, RobustModel):
        model = loaded.net
        info = model.info.with_overrides(**{k: v for k, v in opts.overrides.items() if k in _META_KEYS})
        check_consistency(info.to_dict())
        if type(model) is RobustModel:
            model = RobustModel(model.net, info)
        else:  # a plugin's subclass keeps its own forward / features: only its contract changes
            model.apply_info(info)
    else:
        meta = {k: v for k, v in loaded.info.items() if k in _META_KEYS and v is not None}
        meta.update({k: v for k, v in opts.overrides.items() if v is not None})
        if "num_classes" not in meta:
            meta["num_classes"] = infer_num_classes(loaded.net, meta.get("input_shape"))  # a probe forward, see .probe
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
            extra={"compression": loaded.info["compression"]} if isinstance(loaded.info.get("compression"), dict) else {},
            **{k: meta.get(k) for k in _META_KEYS if k in meta},  # type: ignore[arg-type]
        )
        model = RobustModel(loaded.net, info)
    if model.info.feature_layer:
        model._resolve_feature_module()  # a misspelt --feature-layer fails now, not in the OOD check
    try:
        return model.to(torch.device(opts.device)).eval()
    except NotImplementedError:  # torch.export modules support neither .eval() nor always .to()
        return model


@model_loader("zoo", "bundled models: zoo:digits-cnn, zoo:cifar10-resnet18")
def _zoo(name: str, opts: LoadOptions) -> LoadedNet:
    from .zoo import ZOO

    if name not in ZOO:
        import difflib

        close = difflib.get_close_matches(name, list(ZOO), 2)
        raise UnknownNameError(f"unknown zoo model {name!r}{'; did you mean ' + ', '.join(close) + '?' if close else '.'} Known: {', '.join(ZOO)}.")
    entry = ZOO[name]
    path = entry.locate()
    sub = LoadOptions(**{**opts.__dict__, "arch": opts.arch or entry.architecture})
    loaded = load_path(path, sub, fmt=None)
    loaded.info = {**entry.metadata, **loaded.info, "format": f"zoo ({loaded.info.get('format')})"}
    return loaded


@model_loader("state-dict", "state-dict:PATH (.safetensors/.pt/.pth) with --arch torchvision:NAME|timm:NAME|factory:pkg.mod:fn|zoo-arch:NAME")
def _state_dict(rest: str, opts: LoadOptions) -> LoadedNet:
    p = Path(rest).expanduser()
    return load_path(p, opts, fmt="safetensors" if p.suffix == ".safetensors" else "torch")


def _fmt_loader(fmt: str) -> Callable[[str, LoadOptions], LoadedNet]:
    def load(rest: str, opts: LoadOptions) -> LoadedNet:
        return load_path(Path(rest).expanduser(), opts, fmt=fmt)

    return load


@model_loader("torchvision", "torchvision:NAME (ImageNet weights from the local torch hub cache; --download to fetch)")
def _torchvision(name: str, opts: LoadOptions) -> LoadedNet:
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
    return LoadedNet(net, {
        "format": "torchvision", "sha256": _sha_or_none(hub), "path": str(hub), "num_classes": len(weights.meta["categories"]),
        "class_names": tuple(weights.meta["categories"]), "mean": tuple(t.mean), "std": tuple(t.std), "input_shape": (3, crop, crop),
        "dataset": "imagenet", "architecture": f"torchvision:{name}",
    })


def _sha_or_none(p: Path) -> str | None:
    return sha256_file(p) if p.is_file() else None


@model_loader("timm", "timm:NAME (pretrained weights from the local Hugging Face cache; --download to fetch)")
def _timm(name: str, opts: LoadOptions) -> LoadedNet:
    timm = import_optional("timm", "pip install timm")
    import os

    if not opts.download:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        net = timm.create_model(name, pretrained=True)
    except (RuntimeError, OSError, ValueError) as exc:
        raise ModelLoadError(f"timm:{name} could not be loaded offline ({first_line(exc)}); pass --download to fetch its weights, or give a state dict with --arch timm:{name}.") from exc
    return LoadedNet(net, {"format": "timm", **timm_meta(net), "architecture": f"timm:{name}"})


@model_loader("factory", "factory:pkg.mod:fn, a Python function returning an nn.Module (your own code)")
def _factory(target: str, opts: LoadOptions) -> LoadedNet:
    from .files import state_dict_sha256

    net = call_factory(target, opts.overrides.get("num_classes"))
    refuse_uninitialized(net, f"factory:{target}")
    return LoadedNet(net, {"format": "factory", "sha256": state_dict_sha256(net), "architecture": f"factory:{target}"})


@model_loader("robustbench", "robustbench:NAME[:dataset[:threat]] from --model-dir (default ./models); --download to fetch")
def _robustbench(rest: str, opts: LoadOptions) -> LoadedNet:
    from .robustbench_compat import load_robustbench

    return load_robustbench(rest, opts)


def _plugin(prefix: str, fn: Callable[..., Any], rest: str, opts: LoadOptions) -> LoadedNet:
    obj = fn(rest, device=opts.device, download=opts.download)
    if not isinstance(obj, nn.Module):
        raise ModelLoadError(f"model plugin {prefix!r} returned {type(obj).__name__}, not an nn.Module.")
    return LoadedNet(obj, {"format": f"plugin:{prefix}"})


_FORMATS = {
    "torchscript": "torchscript:PATH, needs --trust-code (can run code)",
    "export": "export:PATH.pt2 (torch.export), needs --trust-code (can run code)",
    "pickle": "pickle:PATH, a whole pickled nn.Module, needs --trust-code (runs code)",
}
for _fmt, _desc in _FORMATS.items():
    model_loader(_fmt, _desc)(_fmt_loader(_fmt))
