"""``defend --train-limit N`` trains on N images drawn at random, not the first N.

The CIFAR-10 JPEG set in ../shared/data is sorted by label: its first 2,000 images are classes 0,
1 and 2 only, and a fast-at run with ``--train-limit 2000`` produced a model that predicted three
classes (clean accuracy 0.20 on the held-out test images, 0.83 on its own validation split, which
came from the same three classes). The subset must cover the classes the file covers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from robustlab.data.base import Dataset
from robustlab.defenses.trainer import TrainConfig
from robustlab.errors import DataError
from robustlab.models import LoadOptions
from robustlab.pipelines.defend import DefendConfig, run_defense


class _Stop(Exception):
    pass


def _sorted_digits() -> Dataset:
    from robustlab.data import load_dataset

    d = load_dataset("digits", split="train")
    order = torch.argsort(d.y, stable=True).tolist()
    return d.subset(order)


def _captured_training_set(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, data: Dataset, *, limit: int, seed: int) -> Dataset:
    import robustlab.data as data_mod
    import robustlab.pipelines.defend as defend_mod

    def fake_load(spec: str, *, split: str = "test", **kw: Any) -> Dataset:
        if split != "train":
            raise DataError("no such split")
        return data

    seen: dict[str, Any] = {}

    def fake_train(model: Any, method: Any, train_data: Dataset, *a: Any, **kw: Any) -> Any:
        seen["train"] = train_data
        raise _Stop

    monkeypatch.setattr(data_mod, "load_dataset", fake_load)
    monkeypatch.setattr(defend_mod, "train", fake_train)
    cfg = DefendConfig(model_spec="zoo:digits-cnn", load=LoadOptions(device="cpu"), method="fast-at", data_spec="digits",
                       train=TrainConfig(epochs=1, seed=seed), out=tmp_path / "m.safetensors", train_limit=limit, val_fraction=0.0, quiet=True)
    with pytest.raises(_Stop):
        run_defense(cfg)
    return seen["train"]  # type: ignore[no-any-return]


def test_train_limit_draws_from_every_class_of_a_sorted_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data = _sorted_digits()
    limit = len(data) // 5  # the first fifth of the sorted file holds two classes
    assert len(torch.unique(data.y[:limit])) <= 2
    got = _captured_training_set(monkeypatch, tmp_path, data, limit=limit, seed=0)
    assert len(got) == limit
    counts = torch.bincount(got.y, minlength=10)
    assert (counts > 0).all(), counts.tolist()
    assert int(counts.max()) < 2 * limit / 10, counts.tolist()  # roughly proportional, not the first classes
    assert len(set(got.ids)) == limit and set(got.ids) <= set(data.ids)


def test_train_limit_subset_is_seeded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data = _sorted_digits()
    a = _captured_training_set(monkeypatch, tmp_path / "a", data, limit=100, seed=0).ids
    b = _captured_training_set(monkeypatch, tmp_path / "b", data, limit=100, seed=0).ids
    c = _captured_training_set(monkeypatch, tmp_path / "c", data, limit=100, seed=1).ids
    assert a == b and a != c
