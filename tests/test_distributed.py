"""torchrun with 2 gloo processes gives the same scorecard as one process (same seed, same batches)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SUITE = Path(__file__).parent / "suites" / "distributed.yaml"


def _results(card):
    return {c["id"]: (c["status"], c["metrics"], c["per_sample"]) for c in card["checks"]}


@pytest.mark.timeout(900)
def test_two_gloo_processes_match_single_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    args = ["evaluate", "--model", "zoo:digits-cnn", "--suite", str(SUITE), "--batch-size", "40", "--limit", "160", "--no-mlflow", "--quiet", "--seed", "7", "--device", "cpu"]
    single = subprocess.run([sys.executable, "-m", "robustlab", *args, "--out", str(tmp_path / "single")], env=env, capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "robustlab"]
    multi = subprocess.run([*torchrun, *args, "--out", str(tmp_path / "multi")], env=env, capture_output=True, text=True, timeout=600)
    assert multi.returncode == 0, multi.stderr[-3000:]
    a = json.loads((tmp_path / "single" / "scorecard.json").read_text())
    b = json.loads((tmp_path / "multi" / "scorecard.json").read_text())
    assert b["run"]["world_size"] == 2 and a["run"]["world_size"] == 1
    assert all(c["status"] == "ok" for c in a["checks"]), [(c["id"], c["reason"]) for c in a["checks"]]
    assert _results(a) == _results(b)
    assert (tmp_path / "multi" / "results.rank1.sqlite").is_file()
