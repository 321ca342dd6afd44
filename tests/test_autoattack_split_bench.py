"""bench/autoattack_split.py runs end to end (``--quick``): per-member seconds of both engines, their ratio, same flags."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "autoattack_split.py"


def _bench_rows(script: str, *args: str) -> list[dict]:
    """The JSON lines ``bench/<script>`` prints with ``args`` on the CIFAR ResNet-18 and foolbox's CIFAR samples, one thread."""
    out = subprocess.run([sys.executable, str(BENCH.parent / script), "--quick", "--model", "zoo:cifar10-resnet18", "--data", "samples:cifar10",
                          "--threads", "1", *args], capture_output=True, text=True, timeout=600, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_split_bench_quick_prints_both_engines_and_the_ratio() -> None:
    out = subprocess.run([sys.executable, str(BENCH), "--quick", "--model", "zoo:digits-cnn", "--data", "digits", "--eps", "0.1", "--n", "12",
                          "--threads", "1"], capture_output=True, text=True, timeout=300, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    fast, ref, ratio = rows
    assert (fast["engine"], ref["engine"]) == ("fast", "reference")
    for r in (fast, ref):
        assert set(r["seconds_per_attack"]) == set(r["robust_after"]) == {"apgd-ce", "apgd-t", "fab-t", "square"}
        assert sum(r["seconds_per_attack"].values()) <= r["seconds"] + 0.05
        after = list(r["robust_after"].values())
        assert after == sorted(after, reverse=True) and after[0] <= r["clean_correct"] <= r["n"] == 12
    # the printed seconds are rounded to 0.01 s and the ratio (of the unrounded times) to 0.01: allow exactly that error
    r = ref["seconds"] / fast["seconds"]
    assert abs(ratio["ratio"] - r) <= r * (0.005 / fast["seconds"] + 0.005 / ref["seconds"]) + 0.005 + 1e-9, (ratio, fast["seconds"], ref["seconds"])
    assert ratio["flag_disagreements"] <= 1  # Square's documented batch dependence at most


def test_split_bench_reports_the_folded_view() -> None:
    """On a model with batch norms the fast engine iterates on the folded copy (as `evaluate` does) and says so;
    --no-fold-bn iterates on the model itself."""
    for extra, folded in (([], 20), (["--no-fold-bn"], 0)):
        out = subprocess.run([sys.executable, str(BENCH), "--quick", "--model", "zoo:cifar10-resnet18", "--data", "samples:cifar10", "--n", "4",
                              "--threads", "1", "--order", "fast", *extra], capture_output=True, text=True, timeout=300, check=True).stdout
        (fast,) = [json.loads(line) for line in out.splitlines() if line.strip()]
        assert fast["folded_batch_norms"] == folded
        assert fast["flipped"] == 0  # the copy computes the model's function: nothing it breaks is intact on the model


def test_fold_bn_bench_quick() -> None:
    rows = _bench_rows("fold_bn.py", "--n", "6", "--reps", "1", "--eps", "1/255")
    costs = [r for r in rows if r["task"] == "fold_bn/row_cost"]
    assert {(r["kind"], r["batch"]) for r in costs} == {(k, b) for k in ("forward", "input_gradient") for b in (2, 18)}
    assert all(r["folded_batch_norms"] == 20 for r in costs)
    # the printed ratio is the ratio of the printed costs (each rounded to 1e-3 ms, the ratio to 1e-3)
    assert all(abs(r["ratio"] - r["model_ms_per_row"] / r["folded_ms_per_row"]) <= 0.002 + 1e-3 * r["ratio"] for r in costs)
    members = [r for r in rows if r["task"] == "fold_bn/autoattack_gradient_members"]
    assert {r["attack_model"] for r in members} == {"model", "folded"}
    (ratio,) = [r for r in rows if r["task"] == "fold_bn/autoattack_gradient_members/ratio"]
    assert ratio["flag_disagreements"] == 0
    assert abs(ratio["ratio"] - ratio["model_seconds_median"] / ratio["folded_seconds_median"]) <= 0.005 + 0.02 * ratio["ratio"]


def test_channels_last_view_bench_quick() -> None:
    rows = _bench_rows("channels_last_view.py", "--n", "4", "--reps", "1", "--eps", "1/255")
    costs = [r for r in rows if r["task"] == "channels_last_view/row_cost"]
    assert {(r["kind"], r["batch"]) for r in costs} == {(k, b) for k in ("forward", "input_gradient") for b in (2, 18)}
    assert all(abs(r["ratio"] - r["contiguous_ms_per_row"] / r["view_ms_per_row"]) <= 0.002 + 1e-3 * r["ratio"] for r in costs)
    members = [r for r in rows if r["task"] == "channels_last_view/autoattack_members"]
    assert sorted(r["view"] for r in members) == ["channels_last", "contiguous"]
    # the contiguous side never runs channels-last; the default side does on APGD-T's and FAB-T's stacked targets
    # (2 points x 9 targets = 18 rows, above the threshold)
    by = {r["view"]: r for r in members}
    assert by["contiguous"]["channels_last_passes"] == 0
    assert by["channels_last"]["points"] * 9 >= 16 and by["channels_last"]["channels_last_passes"] > 0
    assert all(r["flipped"] == 0 for r in members)
    (ratio,) = [r for r in rows if r["task"] == "channels_last_view/autoattack_members/ratio"]
    assert ratio["flag_disagreements"] == 0
    assert abs(ratio["ratio"] - ratio["contiguous_seconds_median"] / ratio["channels_last_seconds_median"]) <= 0.005 + 0.02 * ratio["ratio"]


def test_square_ties_bench_quick() -> None:
    rows = _bench_rows("square_ties.py", "--n", "4", "--reps", "1", "--eps", "1/255")
    runs = [r for r in rows if r["task"] == "square_ties/run"]
    assert sorted(r["tie_width"] for r in runs) == ["calibrated", "fixed"]
    assert all(r["points"] > 0 and r["rows"] >= r["one_row_passes"] + 2 * r["multi_row_passes"] for r in runs)
    (ratio,) = [r for r in rows if r["task"] == "square_ties/ratio"]
    assert ratio["same_points"] is True
    assert abs(ratio["ratio"] - ratio["fixed_seconds_median"] / ratio["calibrated_seconds_median"]) <= 0.005 + 0.02 * ratio["ratio"]


def test_square_local_bench_quick() -> None:
    # robustlab's own threshold leaves this CIFAR ResNet-18 (24-32% of the multiply-adds saved) on the full pass: lowered here
    rows = _bench_rows("square_local.py", "--n", "4", "--reps", "1", "--eps", "1/255", "--min-saving", "0.2")
    runs = {r["evaluation"]: r for r in rows if r["task"] == "square_local/run"}
    assert set(runs) == {"local", "full"}
    assert runs["full"]["local_rows"] == 0 and runs["local"]["local_rows"] >= 100 * runs["local"]["robust"] >= 100  # robust points' late candidates
    (ratio,) = [r for r in rows if r["task"] == "square_local/ratio"]
    assert ratio["same_points"] is True
    assert 0.2 <= ratio["multiply_adds_saved_by_square_size"]["7"] < 1
    assert abs(ratio["ratio"] - ratio["full_seconds_median"] / ratio["local_seconds_median"]) <= 0.005 + 0.02 * ratio["ratio"]


def test_local_forward_rows_bench() -> None:
    out = subprocess.run([sys.executable, str(BENCH.parent / "local_forward_rows.py"), "--model", "zoo:cifar10-resnet18", "--rows", "2", "--reps", "1",
                          "--threads", "1"], capture_output=True, text=True, timeout=300, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert [r["square"] for r in rows] == [7, 5, 4, 3, 2, 1]  # the late sizes of AutoAttack's schedule on 32 px, largest first
    for r in rows:
        assert r["max_rel_logit_diff"] < 1e-5 and 0.2 <= r["multiply_adds_saved"] < 0.5
        assert abs(r["ratio"] - r["local_ms_per_row"] / r["full_ms_per_row"]) <= 0.0005 + 0.01 * r["ratio"] + 0.005 / r["full_ms_per_row"]


def test_packed_weights_bench_quick() -> None:
    """bench/packed_weights.py: both kinds at both batch sizes; the packed copy computes the view's function."""
    rows = _bench_rows("packed_weights.py", "--n", "4")
    assert {(r["kind"], r["batch"]) for r in rows} == {(k, b) for k in ("forward", "input_gradient") for b in (2, 18)}
    assert all(r["packed_convolutions"] == 20 for r in rows)
    assert all(abs(r["ratio"] - r["view_ms_per_row"] / r["packed_ms_per_row"]) <= 0.002 + 1e-3 * r["ratio"] for r in rows)
    # within rounding of the model: logits to float32 rounding, gradients to what the view itself differs by
    assert all(r["packed_max_rel_diff"] <= max(1e-5, 2 * r["view_max_rel_diff"]) for r in rows), rows


def test_interop_threads_bench_runs() -> None:
    """bench/interop_threads.py: both kinds, each way; the printed ratio is that of the printed costs."""
    out = subprocess.run([sys.executable, str(BENCH.parent / "interop_threads.py"), "--model", "zoo:cifar10-resnet18", "--rows", "1", "--reps", "1",
                          "--repeats", "1"], capture_output=True, text=True, timeout=300, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert [(r["kind"], r["rows_total"]) for r in rows] == [("forward", 2), ("input_gradient", 2)]
    assert all(r["ms_row_2threads"] > 0 and r["ms_row_2x1thread"] > 0 and r["ms_row_1thread_alone"] > 0 for r in rows)
    assert all(abs(r["ratio"] - r["ms_row_2threads"] / r["ms_row_2x1thread"]) <= 0.002 + 1e-3 * r["ratio"] for r in rows)
