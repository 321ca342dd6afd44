"""Shared fixtures. Tests use the installed package (``import robustlab``), tiny CPU models and
shipped data; the real CIFAR-10 images in ``../shared/data`` are used when present, else skipped."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

_REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path | None:
    env = os.environ.get("ROBUSTLAB_SHARED_DATA")
    for cand in ([Path(env)] if env else []) + [_REPO.parent / "shared" / "data", _REPO / "shared" / "data"]:
        if (cand / "cifar10_test_1000.npz").is_file():
            return cand
    return None


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    d = _shared_data()
    if d is None:
        pytest.skip("shared CIFAR-10 data (../shared/data) not available")
    return d


@pytest.fixture(scope="session")
def cifar_npz(shared_data_dir: Path) -> Path:
    return shared_data_dir / "cifar10_test_1000.npz"


@pytest.fixture(scope="session")
def digits_model():
    from robustlab.models import load_model

    return load_model("zoo:digits-cnn", device="cpu")


@pytest.fixture(scope="session")
def cifar_model():
    from robustlab.models import load_model

    return load_model("zoo:cifar10-resnet18", device="cpu")


@pytest.fixture(scope="session")
def digits_data():
    from robustlab.data import load_dataset

    return load_dataset("digits", split="test")


@pytest.fixture(scope="session")
def cifar_data(cifar_npz: Path):
    """The first 1000 real CIFAR-10 test images (skips without ../shared/data)."""
    from robustlab.data import load_dataset

    return load_dataset(f"npz:{cifar_npz}", split="test")


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(autouse=True)
def _seed_global_rngs():
    """Tests that draw toy data from the global RNGs get the same data every run (no flaky tests)."""
    torch.manual_seed(0)
    np.random.seed(0)
    yield
