"""Shared fixtures. Tests use the installed package (``import robustlab``), tiny CPU models and
shipped data; the real CIFAR-10 images in ``../shared/data`` are used when present, else skipped."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):
    # `pytest -n auto` (the README's test command): each worker, and every program it starts, gets
    # one intra-op thread, so two workers on two cores do not fight over four threads.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    torch.set_num_threads(1)
else:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: one worker per core, at most four (each worker holds torch and a model or two)."""
    return max(1, min(4, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)))

_REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path | None:
    env = os.environ.get("ROBUSTLAB_SHARED_DATA")
    for cand in ([Path(env)] if env else []) + [_REPO.parent / "shared" / "data", _REPO / "shared" / "data"]:
        if (cand / "cifar10_test_1000.npz").is_file():
            return cand
    return None


#: why a test that needs the real CIFAR-10 images skipped, and how to get them
NO_SHARED_DATA = (
    "needs the real CIFAR-10 test images: put cifar10_test_1000.npz (and cifar10_9000_jpeg.npz) in "
    "../shared/data/ beside the checkout, or set ROBUSTLAB_SHARED_DATA=DIR (see ../shared/data/README.md)"
)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    d = _shared_data()
    if d is None:
        pytest.skip(NO_SHARED_DATA)
    return d


_REF_RESULTS = pytest.StashKey[list]()


# -- markers: reference comparisons and integration tests (tables in tests/_markers.py) ------------
def _table_entry(item: pytest.Item, table: dict) -> object:
    entry = table.get(item.path.name)
    if not entry:
        return None
    name = getattr(item, "originalname", None) or item.name.split("[")[0]
    if isinstance(entry, dict):
        return entry.get(name, entry.get("*"))
    return True if (name in entry or "*" in entry) else None


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from _markers import INTEGRATION, REFERENCE

    for item in items:
        ref = _table_entry(item, REFERENCE)
        if ref is not None:
            item.add_marker(pytest.mark.reference(ref))
        if _table_entry(item, INTEGRATION):
            item.add_marker(pytest.mark.integration)


def _is_fidelity(item: pytest.Item) -> bool:
    return item.get_closest_marker("reference") is not None or "shared_data_dir" in getattr(item, "fixturenames", ())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> object:
    """In CI, where ../shared/data exists, a skipped reference/fidelity test is a failure: a skip there
    means a comparison with a reference silently did not run."""
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and _in_ci() and _shared_data() is not None and _is_fidelity(item) and not hasattr(rep, "wasxfail"):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = f"reference/fidelity test skipped in CI (a skip here hides a missing comparison): {reason}"
    if rep.when == "call" or (rep.when == "setup" and not rep.passed):
        marker = item.get_closest_marker("reference")
        if marker is not None:
            item.config.stash.setdefault(_REF_RESULTS, []).append((str(marker.args[0]) if marker.args else "?", rep.outcome))


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # noqa: ANN001
    """One line: how many tests compared robustlab with a reference implementation, and how they ended."""
    results = config.stash.get(_REF_RESULTS, [])
    if not results:
        return
    by_ref: dict[str, int] = {}
    for ref, outcome in results:
        if outcome == "passed":
            by_ref[ref] = by_ref.get(ref, 0) + 1
    counts = {o: sum(1 for _, oc in results if oc == o) for o in ("passed", "failed", "skipped")}
    detail = ", ".join(f"{k} {v}" for k, v in sorted(by_ref.items()))
    terminalreporter.write_line(
        f"reference comparisons: {counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped ({detail})"
    )


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


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op thread for a module (``pytestmark = pytest.mark.usefixtures("one_thread")``): attack
    loops are many small ops, and more threads spin-wait on a busy 2-core box."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(autouse=True)
def _seed_global_rngs():
    """Tests that draw toy data from the global RNGs get the same data every run (no flaky tests)."""
    torch.manual_seed(0)
    np.random.seed(0)
    threads = torch.get_num_threads()
    yield
    if torch.get_num_threads() != threads:  # an in-process `--threads 1` run must not slow every later test
        torch.set_num_threads(threads)
