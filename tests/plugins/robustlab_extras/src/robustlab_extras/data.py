"""Data source ``extras-digits:N``: the first N of scikit-learn's digits in a split (ids extras/<i>)."""

from __future__ import annotations

import numpy as np
import torch

from robustlab.data.base import Dataset
from robustlab.data.plugins import DatasetPlugin


def load(arg: str, *, split: str, root: object = None, download: bool = False) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    idx = np.arange(len(d.target))
    part = {"test": idx % 5 == 0, "val": idx % 5 == 1, "train": idx % 5 > 1}[split]
    idx = idx[part][: int(arg) if arg else None]
    x = torch.from_numpy((d.images[idx] / 16.0).astype(np.float32)).unsqueeze(1)
    return Dataset(spec=f"extras-digits:{arg}", split=split, ids=[f"extras/{i}" for i in idx], y=torch.from_numpy(d.target[idx].astype(np.int64)),
                   classes=[str(k) for k in range(10)], x=x)


SOURCE = DatasetPlugin(load, "robustlab-extras: the first N scikit-learn digits of a split", needs_arg=True)
