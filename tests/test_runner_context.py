from pathlib import Path

import pytest
import torch

from robustlab.checks.base import RunContext
from robustlab.store import ResultStore


def _ctx(tmp_path: Path, batch_size: int = 32, store: ResultStore | None = None) -> RunContext:
    store = store or ResultStore(tmp_path / "r.sqlite", {"m": 1})
    store.begin(resume=True)
    return RunContext(model=None, data=None, seed=0, batch_size=batch_size, device=torch.device("cpu"), out_dir=tmp_path,  # type: ignore[arg-type]
                      store=store, load_data=lambda *a, **k: None, progress=lambda it, **k: it)


def test_map_batches_order_and_cache(tmp_path):
    calls = []

    def fn(a, b):
        calls.append((a, b))
        return {"x": list(range(a, b))}

    ctx = _ctx(tmp_path)
    out = ctx.map_batches("s", 70, fn)
    assert [v for part in out for v in part["x"]] == list(range(70))
    assert calls == [(0, 32), (32, 64), (64, 70)]
    calls.clear()
    again = ctx.map_batches("s", 70, fn)  # resumed: nothing recomputed
    assert again == out and calls == []


def test_oom_backoff_splits_and_merges(tmp_path):
    def fn(a, b):
        if b - a > 8:
            raise torch.cuda.OutOfMemoryError("fake")
        return {"x": list(range(a, b)), "nested": {"y": [i * 2 for i in range(a, b)]}}

    ctx = _ctx(tmp_path)
    out = ctx.map_batches("oom", 40, fn)
    assert [v for p in out for v in p["x"]] == list(range(40))
    assert [v for p in out for v in p["nested"]["y"]] == [2 * i for i in range(40)]
    assert ctx.effective_batch_size == 8


def test_resume_refuses_changed_fingerprint(tmp_path):
    from robustlab.errors import ResumeError

    s = ResultStore(tmp_path / "r.sqlite", {"model": "a"})
    s.begin(resume=False)
    s.put("x", "k", [1])
    s.close()
    s2 = ResultStore(tmp_path / "r.sqlite", {"model": "b"})
    with pytest.raises(ResumeError, match="model"):
        s2.begin(resume=True)
    assert s2.begin(resume=False) == 0
