"""``robustbench:NAME[:dataset[:threat]]`` -- models from the RobustBench zoo.

PyPI's robustbench 1.1.1 imports a module ``autoattack`` that the authors' PyPI packaging installs
as ``pyautoattack``; :func:`import_robustbench` aliases it so robustbench imports. Weights are read
from ``--model-dir`` (RobustBench's layout ``DIR/<dataset>/<threat>/<NAME>.pt``) with
``weights_only=True``; they are downloaded (by robustbench) only with ``--download``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelLoadError, UnknownNameError

if TYPE_CHECKING:
    from .options import LoadedNet, LoadOptions


def import_robustbench() -> Any:
    """Import robustbench, aliasing ``autoattack`` -> ``pyautoattack`` first."""
    if "autoattack" not in sys.modules:
        try:
            pa = importlib.import_module("pyautoattack")
            sys.modules["autoattack"] = pa
            for sub in ("state", "autopgd_base", "fab_pt", "square", "checks", "other_utils", "autoattack"):
                try:
                    sys.modules[f"autoattack.{sub}"] = importlib.import_module(f"pyautoattack.{sub}")
                except ImportError:
                    pass
        except ImportError:
            pass
    added = False
    try:
        import pkg_resources  # noqa: F401
    except ImportError:  # setuptools >= 80 has no pkg_resources; robustbench.loaders needs resource_filename
        import types

        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = _resource_filename  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = shim
        added = True
    try:
        return importlib.import_module("robustbench")
    except ImportError as exc:
        raise ModelLoadError(f"robustbench: models need the robustbench package (pip install robustbench) ({exc}).") from exc
    finally:
        if added:
            sys.modules.pop("pkg_resources", None)


def _resource_filename(package: str, resource: str) -> str:
    """Stand-in for ``pkg_resources.resource_filename`` (plain directory installs)."""
    import os

    mod = sys.modules.get(package) or importlib.import_module(package)
    return os.path.join(os.path.dirname(str(mod.__file__)), resource)


_DATASET_INFO = {
    "cifar10": {"num_classes": 10, "input_shape": (3, 32, 32), "dataset": "cifar10"},
    "cifar100": {"num_classes": 100, "input_shape": (3, 32, 32), "dataset": "cifar100"},
    "imagenet": {"num_classes": 1000, "input_shape": (3, 224, 224), "dataset": "imagenet"},
}


def load_robustbench(rest: str, opts: "LoadOptions") -> "LoadedNet":
    import torch

    from ..signing import sha256_file
    from .files import strip_wrapper_prefixes, unwrap_checkpoint
    from .options import LoadedNet

    parts = rest.split(":")
    name = parts[0]
    dataset = parts[1] if len(parts) > 1 else "cifar10"
    threat = parts[2] if len(parts) > 2 else "Linf"
    if dataset not in _DATASET_INFO:
        raise UnknownNameError(f"unknown RobustBench data set {dataset!r}; use cifar10, cifar100 or imagenet.")
    rb = import_robustbench()
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel

    try:
        zoo = model_dicts[BenchmarkDataset(dataset)][ThreatModel(threat)]
    except ValueError as exc:
        raise UnknownNameError(f"unknown RobustBench threat model {threat!r}; use Linf, L2 or corruptions.") from exc
    if name not in zoo:
        import difflib

        close = difflib.get_close_matches(name, list(zoo), 3)
        raise UnknownNameError(f"unknown RobustBench model {name!r} for {dataset}/{threat}{'; did you mean ' + ', '.join(close) + '?' if close else '.'}")
    model_dir = Path(opts.model_dir or "models")
    path = model_dir / dataset / threat / f"{name}.pt"
    info: dict[str, Any] = {"format": "robustbench", "architecture": f"robustbench:{name}", **_DATASET_INFO[dataset]}
    if not path.is_file():
        if not opts.download:
            raise ModelLoadError(f"RobustBench weights for {name} are not in {path.parent}; pass --model-dir with the folder that holds them, or --download to fetch them.")
        net = rb.utils.load_model(model_name=name, model_dir=str(model_dir), dataset=dataset, threat_model=threat)
        return LoadedNet(net, {**info, "path": str(path), "sha256": sha256_file(path) if path.is_file() else None})
    net = zoo[name]["model"]()
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here is a bad file
        raise ModelLoadError(f"cannot read RobustBench checkpoint {path} ({str(exc).splitlines()[0][:160]}).") from exc
    if isinstance(ckpt, dict) and "last" in ckpt and isinstance(ckpt["last"], dict):
        ckpt = ckpt["last"]
    sd, _ = unwrap_checkpoint(ckpt, path)
    sd = strip_wrapper_prefixes({k.removeprefix("module."): v for k, v in sd.items()})  # RobustBench's own loader drops every `module.`
    sd = {k.replace("model.", "", 1) if k.startswith("model.") and not hasattr(net, "model") else k: v for k, v in sd.items()}
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as exc:
        raise ModelLoadError(f"RobustBench checkpoint {path} does not fit {name}'s architecture ({str(exc).splitlines()[0][:160]}).") from exc
    return LoadedNet(net, {**info, "path": str(path), "sha256": sha256_file(path)})
