"""torchrun with 2 gloo processes gives the same scorecard as one process (same seed, same batches)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from procs import alive, children

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
    # each rank's peak resident memory is recorded (issue 21: bounded memory per rank)
    peaks = b["environment"]["memory"]["peak_rss_mib_by_rank"]
    assert len(peaks) == 2 and all(100 < p < 4000 for p in peaks), peaks
    assert set(a["environment"]["memory"]["peak_rss_mib_after_check"]) == {c["id"] for c in a["checks"]}


@pytest.mark.timeout(600)
@pytest.mark.parametrize("factory", ["nan_on_rank1", "raises_on_rank1"])
def test_a_batch_that_fails_on_one_rank_ends_every_rank(tmp_path, factory):
    """Before: rank 1's failure left rank 0 waiting in the gather of the batch results for ever."""
    plugins = str(Path(__file__).parent / "plugins")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": plugins + os.pathsep + os.environ.get("PYTHONPATH", "")}
    suite = Path(__file__).parent / "suites" / "clean.yaml"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "robustlab"]
    args = ["evaluate", "--model", f"factory:rl_test_models:{factory}", "--data", "digits", "--suite", str(suite), "--batch-size", "20",
            "--limit", "80", "--no-mlflow", "--no-report", "--quiet", "--device", "cpu", "--out", str(tmp_path / "out")]
    try:
        r = subprocess.run([*torchrun, *args], env=env, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail("a failure on rank 1 left the other rank waiting (no exit within 300 s)")
    if factory == "nan_on_rank1":  # a model-output error stops the run: the rank exits 2 with the one-line error
        assert r.returncode != 0 and "exitcode  : 2" in r.stderr, r.stderr[-3000:]  # torchrun itself exits 1
        assert "rror: the model produced NaN" in r.stderr, r.stderr[-3000:]
    else:  # any other failure is the check's error, recorded the same way by every rank
        # no policy given: the errored check is in the scorecard and rank 0 exits 3 (inconclusive); torchrun exits 1
        assert r.returncode != 0 and "exitcode  : 3" in r.stderr, r.stderr[-3000:]
        card = json.loads((tmp_path / "out" / "scorecard.json").read_text())
        (clean,) = card["checks"]
        assert clean["status"] == "error" and "rank 1" in clean["reason"] and "simulated failure" in clean["reason"], clean


@pytest.mark.timeout(600)
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc")
def test_ranks_stop_when_the_launcher_is_killed_and_resume_finishes(tmp_path):
    """Before: torchrun starts its ranks in sessions of their own, so `kill -9` of the launcher (a CI timeout, the
    OOM killer) left them running to the end, holding the output folder's lock; --resume was refused meanwhile."""
    import signal
    import sqlite3
    import time

    plugins = str(Path(__file__).parent / "plugins")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONPATH": plugins + os.pathsep + os.environ.get("PYTHONPATH", "")}
    suite = Path(__file__).parent / "suites" / "clean.yaml"
    out = tmp_path / "out"
    args = ["evaluate", "--model", "factory:rl_test_models:slow_tiny", "--data", "digits", "--suite", str(suite), "--batch-size", "10",
            "--limit", "200", "--no-mlflow", "--no-report", "--quiet", "--device", "cpu", "--out", str(out)]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "robustlab"]
    launcher = subprocess.Popen([*torchrun, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def stored():
        n = 0
        for f in out.glob("results.rank*.sqlite"):
            try:
                with sqlite3.connect(f"file:{f}?mode=ro", uri=True, timeout=1) as c:
                    n += c.execute("select count(*) from results").fetchone()[0]
            except sqlite3.Error:
                pass
        return n

    try:
        deadline = time.monotonic() + 240
        while stored() < 2:  # both ranks are inside the check (0.5 s per batch, 20 batches)
            assert launcher.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
            time.sleep(0.2)
        ranks = [p for agent in [launcher.pid] for p in children(agent)]
        assert len(ranks) == 2, ranks
        launcher.kill()  # SIGKILL: torchrun cannot forward anything
        launcher.wait()
        t0 = time.monotonic()
        while any(alive(p) for p in ranks) and time.monotonic() - t0 < 20:
            time.sleep(0.2)
        assert not any(alive(p) for p in ranks), "the ranks outlived their launcher"
        err = launcher.stderr.read()  # the ranks wrote to the pipe they inherited
    finally:
        for p in children(launcher.pid):
            os.kill(p, signal.SIGKILL)
    assert "the torchrun launcher" in err and "--resume" in err, err[-2000:]
    assert not (out / "scorecard.json").is_file() or json.loads((out / "scorecard.json").read_text())["run"].get("complete") is not True
    kept = stored()
    r = subprocess.run([*torchrun, *args, "--resume"], env={**env}, capture_output=True, text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    card = json.loads((out / "scorecard.json").read_text())
    assert card["run"]["complete"] is True and card["checks"][0]["status"] == "ok"
    assert 2 <= kept < 20
