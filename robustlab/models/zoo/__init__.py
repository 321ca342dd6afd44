"""Bundled models (``zoo:NAME``).

- ``digits-cnn``: a small CNN trained on the digits training split by ``scripts/train_digits_cnn.py``
  (reproducible in under a minute on 2 CPU cores); weights and metadata committed here.
- ``cifar10-resnet18``: the real CIFAR-10 ResNet-18 that ``pyautoattack`` ships
  (``examples/model_test.pt``), inputs in [0, 1] without normalisation; pairs with ``samples:cifar10``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from ...errors import ModelLoadError

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass(frozen=True)
class ZooEntry:
    description: str
    architecture: str
    locate: Callable[[], Path]
    metadata: dict[str, Any] = field(default_factory=dict)


def _bundled(name: str) -> Callable[[], Path]:
    def locate() -> Path:
        p = Path(str(resources.files(__name__).joinpath(name)))
        if not p.is_file():
            raise ModelLoadError(f"the bundled weights {name} are missing from the installation; reinstall robustlab or run scripts/train_digits_cnn.py.")
        return p

    return locate


def _pyautoattack_resnet() -> Path:
    try:
        p = Path(str(resources.files("pyautoattack").joinpath("examples/model_test.pt")))
    except ModuleNotFoundError as exc:
        raise ModelLoadError("zoo:cifar10-resnet18 is the ResNet-18 shipped by pyautoattack; pip install pyautoattack.") from exc
    if not p.is_file():
        raise ModelLoadError(f"pyautoattack is installed but {p} is missing; reinstall pyautoattack.")
    return p


ZOO: dict[str, ZooEntry] = {
    "digits-cnn": ZooEntry(
        "small CNN on scikit-learn digits (1x8x8, 10 classes), trained by scripts/train_digits_cnn.py",
        "zoo-arch:digits-cnn",
        _bundled("digits-cnn.safetensors"),
    ),
    "cifar10-resnet18": ZooEntry(
        "CIFAR-10 ResNet-18 shipped with pyautoattack (examples/model_test.pt), inputs in [0,1]",
        "zoo-arch:cifar-resnet18",
        _pyautoattack_resnet,
        {"num_classes": 10, "input_shape": (3, 32, 32), "bounds": (0.0, 1.0), "class_names": CIFAR10_CLASSES, "dataset": "samples:cifar10", "feature_layer": None},
    ),
}
