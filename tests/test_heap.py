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
    big = torch.ones(6 << 20)          # 24 MB: freeing it raises glibc's dynamic threshold to 24 MB
    del big
    small = [torch.ones(256) for _ in range(100)]  # live heap blocks around
    y = torch.ones(3 << 20)            # 12 MB
    before = rss()
    del y
    print(json.dumps({"returned_mb": before - rss()}))
    """
)


def _returned(bound: bool, env: dict[str, str] | None = None) -> float:
    import os

    r = subprocess.run([sys.executable, "-c", FREED, "1" if bound else "0"], capture_output=True, text=True, timeout=120,
                       env={**{k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_THRESHOLD_", "ROBUSTLAB_MMAP_THRESHOLD")}, **(env or {})})
    assert r.returncode == 0, r.stderr[-2000:]
    return float(json.loads(r.stdout.strip().splitlines()[-1])["returned_mb"])


def test_a_freed_block_goes_back_to_the_system_at_once() -> None:
    assert _returned(False) < 2  # glibc's default: the 12 MB block stays in the heap
    assert _returned(True, {"ROBUSTLAB_MMAP_THRESHOLD": str(2 << 20)}) > 10  # fixed threshold: unmapped when freed
    assert _returned(True, {"ROBUSTLAB_MMAP_THRESHOLD": "0"}) < 2  # the opt-out
    if _thp() in ("always", "madvise"):
        assert _returned(True) > 10  # the default where huge pages keep it cheap


def _thp() -> str:
    from robustlab.memory import _thp_mode

    return _thp_mode()


def test_without_huge_pages_the_threshold_is_left_alone_unless_asked() -> None:
    code = ("import json, robustlab.memory as m; m._thp_mode = lambda: 'never'; print(json.dumps(m.bound_heap_growth()))")
    import os

    base = {k: v for k, v in os.environ.items() if k not in ("MALLOC_MMAP_THRESHOLD_", "ROBUSTLAB_MMAP_THRESHOLD", "THP_MEM_ALLOC_ENABLE")}
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
    assert heap["mmap_threshold"] == (2 << 20 if _thp() in ("always", "madvise") else None), heap
    assert isinstance(heap["torch_huge_pages"], bool)


def test_an_embedding_process_keeps_its_allocator() -> None:
    code = "import torch, json; from robustlab.memory import bound_heap_growth; print(json.dumps(bound_heap_growth()))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert json.loads(r.stdout.strip().splitlines()[-1])["mmap_threshold"] is None
