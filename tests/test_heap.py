"""The C heap's threshold (issue 21): a command fixes glibc's mmap threshold before torch loads, so a
large freed block goes back to the system at once whatever was freed before it, and the peak of an
attack batch no longer climbs over a long run."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux") or not Path("/proc/self/status").exists(), reason="glibc and /proc only")

FREED = textwrap.dedent(
    """
    import json, os, sys
    from robustlab.memory import bound_heap_growth
    if sys.argv[1] == "1":
        bound_heap_growth()
    import torch
    def rss():
        return int([l for l in open("/proc/self/status") if l.startswith("VmRSS")][0].split()[1]) / 1024
    big = torch.ones(7 << 20)          # 28 MB: freeing it raises glibc's dynamic threshold to 28 MB
    del big
    small = [torch.ones(256) for _ in range(100)]  # live heap blocks around
    y = torch.ones(5 << 20)            # 20 MB: above robustlab's threshold
    before = rss()
    del y
    print(json.dumps({"returned_mb": before - rss()}))
    """
)


def _env(**settings: str) -> dict[str, str]:
    """This process's environment without any heap setting, plus ``settings``."""
    import os

    heap = ("MALLOC_MMAP_THRESHOLD_", "ROBUSTLAB_MMAP_THRESHOLD", "ROBUSTLAB_TRIM_THRESHOLD", "THP_MEM_ALLOC_ENABLE")
    return {**{k: v for k, v in os.environ.items() if k not in heap}, **settings}


def _returned(bound: bool, env: dict[str, str] | None = None) -> float:
    r = subprocess.run([sys.executable, "-c", FREED, "1" if bound else "0"], capture_output=True, text=True, timeout=120, env=_env(**(env or {})))
    assert r.returncode == 0, r.stderr[-2000:]
    return float(json.loads(r.stdout.strip().splitlines()[-1])["returned_mb"])


def test_a_freed_block_goes_back_to_the_system_at_once() -> None:
    assert _returned(False) < 2  # glibc's default: the 20 MB block stays in the heap
    assert _returned(True, {"ROBUSTLAB_MMAP_THRESHOLD": str(2 << 20)}) > 10  # fixed threshold: unmapped when freed
    assert _returned(True, {"ROBUSTLAB_MMAP_THRESHOLD": "0"}) < 2  # the opt-out
    if _thp() in ("always", "madvise"):
        assert _returned(True) > 10  # the default where huge pages keep it cheap


def _thp() -> str:
    from robustlab.memory import _thp_mode

    return _thp_mode()


def test_without_huge_pages_the_threshold_is_left_alone_unless_asked() -> None:
    code = ("import json, robustlab.memory as m; m._thp_mode = lambda: 'never'; print(json.dumps(m.bound_heap_growth()))")
    base = _env()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=base)
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["mmap_threshold"] is None and "huge pages" in got["reason"] and got["torch_huge_pages"] is False
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env={**base, "ROBUSTLAB_MMAP_THRESHOLD": "4194304"})
    assert json.loads(r.stdout.strip().splitlines()[-1])["mmap_threshold"] == 4194304


def test_evaluate_records_the_heap_settings(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "robustlab", "evaluate", "--model", "zoo:digits-cnn", "--suite", str(Path(__file__).parent / "suites" / "clean.yaml"), "--limit", "16",
                        "--out", str(out), "--no-mlflow", "--no-report", "--quiet"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    heap = json.loads((out / "scorecard.json").read_text())["environment"]["memory"]["heap"]
    from robustlab.memory import MMAP_THRESHOLD, TRIM_FACTOR

    on = _thp() in ("always", "madvise")
    assert heap["mmap_threshold"] == (MMAP_THRESHOLD if on else None), heap
    if on:
        assert heap["trim_threshold"] == TRIM_FACTOR * MMAP_THRESHOLD, heap
    assert isinstance(heap["torch_huge_pages"], bool)


def test_an_embedding_process_keeps_its_allocator() -> None:
    code = "import torch, json; from robustlab.memory import bound_heap_growth; print(json.dumps(bound_heap_growth()))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert json.loads(r.stdout.strip().splitlines()[-1])["mmap_threshold"] is None


CONV = textwrap.dedent(
    """
    import json, resource, sys
    from robustlab.memory import bound_heap_growth
    if sys.argv[1] == "1":
        bound_heap_growth()
    import torch
    torch.set_num_threads(1)
    conv = torch.nn.Conv2d(512, 512, 3, padding=1).eval().requires_grad_(False)  # 9.4 MB of weights
    x = torch.rand(2, 512, 4, 4)
    per_pass = []
    with torch.no_grad():
        for _ in range(3):
            conv(x)
        for _ in range(3):  # the steady state: the quietest of three blocks of 10 passes (a one-off fault burst elsewhere does not count)
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            for _ in range(10):
                conv(x)
            per_pass.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10)
    print(json.dumps({"faults_per_pass": min(per_pass), "blocks": per_pass}))
    """
)


def _conv_faults(env: dict[str, str]) -> float:
    r = subprocess.run([sys.executable, "-c", CONV, "1"], capture_output=True, text=True, timeout=120, env=_env(**env))
    assert r.returncode == 0, r.stderr[-2000:]
    return float(json.loads(r.stdout.strip().splitlines()[-1])["faults_per_pass"])


def test_a_small_batch_through_a_wide_layer_does_not_map_fresh_memory_on_every_pass() -> None:
    """oneDNN reorders a convolution's weights into a scratch buffer of their size on every call (9.4 MB for a
    512x512 3x3 layer) through plain malloc, outside PyTorch's huge-page path. With the threshold at 2 MB and
    glibc's 128 KB trim threshold, every call mapped, faulted in and unmapped that buffer: a forward pass of the
    robust CIFAR ResNet-18 at 2 rows took 36 ms instead of 13 (issue 18). The command's threshold keeps such
    buffers in the heap, and its trim threshold keeps the heap's top from being given back between calls."""
    if _thp() not in ("always", "madvise"):
        pytest.skip("the threshold is left alone without transparent huge pages")
    before = _conv_faults({"ROBUSTLAB_MMAP_THRESHOLD": str(2 << 20), "ROBUSTLAB_TRIM_THRESHOLD": str(128 << 10)})  # the setting before
    assert before > 200  # every pass maps its scratch buffer afresh (about 790 faults per pass on this CPU)
    # alone none (0-0.1 per pass); with a second test process busy beside it up to about 130 were seen: far below
    # the setting before, which is the property
    assert _conv_faults({}) < before / 4
