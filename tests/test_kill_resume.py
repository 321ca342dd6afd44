"""Kill a real run with SIGKILL half-way, resume it, and get the scorecard of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from run_store import stored_batches  # noqa: E402

SUITE = Path(__file__).parent / "suites" / "killresume.yaml"


def _args(out, *, verbose=False):
    return [sys.executable, "-m", "robustlab", *(["-v"] if verbose else []), "evaluate", "--model", "zoo:digits-cnn", "--suite", str(SUITE), "--batch-size", "20",
            "--no-mlflow", "--quiet", "--seed", "5", "--device", "cpu", "--out", str(out)]


def _core(card):
    return [(c["id"], c["status"], c["metrics"], c["per_sample"]) for c in card["checks"]]


@pytest.mark.timeout(1200)
def test_kill_minus_nine_then_resume(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref = subprocess.run(_args(tmp_path / "ref"), env=env, capture_output=True, text=True, timeout=900)
    assert ref.returncode == 0, ref.stderr
    total = stored_batches(tmp_path / "ref" / "results.sqlite")
    out = tmp_path / "killed"
    proc = subprocess.Popen(_args(out), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = out / "results.sqlite"
    deadline = time.time() + 600
    # clean stores 18 batches; kill once some PGD batches are stored on top (no timing window:
    # however slow or busy the machine, the kill lands between the first PGD batch and the last one)
    while stored_batches(db) < 22 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; make the suite longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = stored_batches(db)
    assert 18 < partial < total
    # the killed run's scorecard never passes a gate, even when every rule says `if_missing: skip`
    pol = tmp_path / "skip.yaml"
    pol.write_text("rules:\n  - metric: clean/accuracy\n    op: '>='\n    threshold: 0.1\n    if_missing: skip\n")
    gated = subprocess.run([sys.executable, "-m", "robustlab", "gate", str(out / "scorecard.json"), "--policy", str(pol)],
                           env=env, capture_output=True, text=True, timeout=300)
    assert gated.returncode == 3, gated.stdout + gated.stderr
    # forgetting --resume does not throw the killed run's batches away: one line saying what to do, exit 2
    forgot = subprocess.run(_args(out), env=env, capture_output=True, text=True, timeout=300)
    errors = [ln for ln in forgot.stderr.splitlines() if ln.startswith("error:")]
    assert forgot.returncode == 2 and len(errors) == 1 and "--resume" in errors[0] and f"{partial} stored batch results" in errors[0], forgot.stderr
    assert stored_batches(db) == partial
    resumed = subprocess.run(_args(out, verbose=True) + ["--resume"], env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    # every batch stored before the kill was reused, and the store now holds exactly the full run's batches
    assert f"resuming: {partial} stored batch results reused" in resumed.stderr, resumed.stderr[-2000:]
    assert stored_batches(db) == total
    a = json.loads((tmp_path / "ref" / "scorecard.json").read_text())
    b = json.loads((out / "scorecard.json").read_text())
    assert b["run"]["resumed"] is True
    assert _core(a) == _core(b)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("resume", [False, True])
def test_temp_files_a_killed_run_left_are_removed(tmp_path, resume):
    """kill -9 between an atomic write's temp file and its rename leaves `.<name>.<random>.tmp` files in the
    output folder and among the adversarial-example shards; the next run on that folder removes them
    (it holds the folder's lock, so none belongs to a live writer) and leaves other files alone."""
    suite = Path(__file__).parent / "suites" / "clean.yaml"
    out = tmp_path / "out"
    args = [sys.executable, "-m", "robustlab", "evaluate", "--model", "zoo:digits-cnn", "--suite", str(suite), "--limit", "40", "--no-mlflow",
            "--no-report", "--quiet", "--device", "cpu", "--out", str(out)]
    first = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    shards = out / "adversarial" / "pgd" / "eps_0.1"
    shards.mkdir(parents=True)
    stale = [out / ".scorecard.json.k1lled_9.tmp", shards / ".000000000-000000020.npz.a8Zq2x0b.tmp"]
    kept = [out / "my-notes.tmp", out / ".hidden.tmp", shards / "000000000-000000020.npz"]
    for f in stale + kept:
        f.write_bytes(b"half a file")
    again = subprocess.run(args + (["--resume"] if resume else []), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert [f.name for f in stale if f.exists()] == []
    assert all(f.exists() for f in kept)
