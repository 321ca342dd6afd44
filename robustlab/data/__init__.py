"""Data plugins. ``load_dataset(spec, split=...)`` returns a :class:`Dataset` with images in [0, 1].

Specs: ``digits``, ``samples:cifar10|cifar100|mnist|fashion-mnist|imagenet``, ``npz:PATH``,
``folder:PATH``, ``cifar10``, ``cifar100``, ``svhn``, ``mnist``, ``fashion-mnist`` (torchvision, under
``--data-root``; downloaded only with ``--download``). Third-party plugins: entry-point group
``robustlab.datasets`` (a callable ``(arg, split=, root=, download=) -> Dataset``).
"""

from __future__ import annotations

from .base import Dataset, adapt_images
from .plugins import DATASETS, DatasetPlugin, load_dataset

__all__ = ["DATASETS", "Dataset", "DatasetPlugin", "adapt_images", "load_dataset"]
