"""The benches' default data: the shared 1000 real CIFAR-10 test images beside the checkout."""

from __future__ import annotations

import json
import os
from pathlib import Path


def cifar_test_spec(task: str) -> str | None:
    """``npz:`` spec of ``../shared/data/cifar10_test_1000.npz`` (or ``$ROBUSTLAB_SHARED_DATA``), or None
    after printing a ``skipped`` JSON line for ``task`` when the file is not there."""
    shared = Path(os.environ.get("ROBUSTLAB_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    npz = shared / "cifar10_test_1000.npz"
    if not npz.is_file():
        print(json.dumps({"task": task, "skipped": f"{npz} not found; set ROBUSTLAB_SHARED_DATA or pass --data"}))
        return None
    return f"npz:{npz}"
