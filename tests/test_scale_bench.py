"""bench/scale.py runs end to end with --quick and prints well-formed JSON lines (timings never asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench" / "scale.py"


@pytest.mark.slow
def test_scale_bench_quick_runs(tmp_path: Path) -> None:
    keep = tmp_path / "runs"
    r = subprocess.run([sys.executable, str(BENCH), "--quick", "--keep", str(keep)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    sizes = [row for row in rows if not row["task"].endswith("/growth")]
    assert [row["n"] for row in sizes] == [16, 48]
    for row in sizes:
        assert "error" not in row, row
        card = keep / f"n{row['n']}" / "scorecard.json"  # --keep leaves each size's output folder
        assert row["scorecard_bytes"] == card.stat().st_size
        assert row["scorecard_bytes_per_image"] == round(card.stat().st_size / row["n"], 1)
        scorecard = json.loads(card.read_text())
        assert scorecard["data"]["n"] == row["n"]  # the run evaluated n images, not the split's size
        # wait4's ru_maxrss of a process that imported torch: hundreds of MiB, not bytes or KiB misread as MiB
        assert 100 < row["peak_rss_mib"] < 8192, row
        checks = row["seconds_by_check"]  # each check's own time, in the suite's order
        assert list(checks) == ["clean", "pgd_linf", "corruption", "ood"], checks
        assert checks == {k.split("/", 1)[1]: v for k, v in scorecard["timings"].items() if k.startswith("check/")}
        assert all(isinstance(v, float) for v in checks.values()) and sum(checks.values()) <= row["seconds"], row
    (growth,) = [row for row in rows if row["task"].endswith("/growth")]
    a, b = sizes
    assert growth["n"] == [16, 48]
    assert growth["peak_memory_ratio"] == round(b["peak_rss_mib"] / a["peak_rss_mib"], 3)
    assert growth["time_growth_over_n_growth"] == round((b["seconds"] / a["seconds"]) / 3, 3)
    assert growth["scorecard_bytes_per_image"] == [a["scorecard_bytes_per_image"], b["scorecard_bytes_per_image"]]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_scale_bench_kills_every_rank_then_resumes() -> None:
    """--torchrun 2 --resume-after S: kill -9 the launcher and both ranks (torchrun puts each rank in a
    session of its own, so killing the launcher's process group left the ranks running and holding the
    output folder: the resume then exited 2, 'in use by another run'), then finish with --resume and
    report each rank's peak memory."""
    suite = Path(__file__).parent / "suites" / "killresume.yaml"
    r = subprocess.run([sys.executable, str(BENCH), "--model", "zoo:digits-cnn", "--suite", str(suite), "--sizes", "360", "--threads", "1",
                        "--batch-size", "20", "--torchrun", "2", "--resume-after", "8"], capture_output=True, text=True, timeout=800)
    assert r.returncode == 0, r.stderr
    (row,) = [json.loads(line) for line in r.stdout.splitlines() if line.strip() and "/growth" not in line]
    assert "error" not in row and row["exit_code"] == 0, row
    assert row["killed_run"]["killed"] is True, row  # the run takes well over 8 s on 2 ranks (torchrun alone starts in about 5)
    assert isinstance(row["resumed_run"]["stored_batches_reused"], int), row
    assert len(row["peak_rss_mib_by_rank"]) == 2 and all(p > 0 for p in row["peak_rss_mib_by_rank"]), row


def test_digits_all_spec_holds_every_digit_and_the_training_split(tmp_path: Path) -> None:
    """``--data digits-all``: the 1,797 point of the growth table (``digits`` is the 360-image test
    split, so ``--limit 1797`` on it evaluated 360)."""
    import importlib.util

    from robustlab.data import load_dataset

    spec = importlib.util.spec_from_file_location("scale_bench", BENCH)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    data = mod.digits_all(tmp_path)
    every, train = load_dataset(data, split="test"), load_dataset(data, split="train")
    assert len(every) == 1797 and len(train) == len(load_dataset("digits", split="train")) == 1293
    ref = load_dataset("digits", split="test")
    assert every.images(slice(0, 1797)).shape == (1797, 1, 8, 8)
    # the usual test images are among them, unchanged
    idx = [int(i.split("/")[1]) for i in ref.ids[:5]]
    assert torch.equal(every.images(idx), ref.x[:5])
