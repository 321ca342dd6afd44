"""Issue 13, part 4 (MLflow): tracking trouble after the scorecard is written never turns a finished
run into a crash; the default store lives inside --out whatever its name; an unreachable server
fails fast."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from click.testing import CliRunner

from robustlab.cli import main

CLEAN = str(Path(__file__).parent / "suites" / "clean.yaml")


def _evaluate(out: Path, *extra: str):
    return CliRunner().invoke(main, ["evaluate", "--model", "zoo:digits-cnn", "--data", "digits", "--limit", "20", "--suite", CLEAN,
                                     "--out", str(out), "--quiet", "--no-report", "--device", "cpu", *extra])


def test_default_store_stays_inside_an_out_with_url_characters(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    out = Path("out") / "q?x=1%20#frag"
    r = _evaluate(out)
    assert r.exit_code == 0, r.stderr
    assert (out / "mlflow.db").is_file() and (out / "scorecard.json").is_file()
    stray = [p for p in tmp_path.rglob("mlflow.db") if p.resolve() != (out / "mlflow.db").resolve()]
    assert not stray, stray


def _evaluate_process(out: Path, *extra: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A real process: the CLI's logging goes to its stderr (pytest captures logging in-process)."""
    return subprocess.run([sys.executable, "-m", "robustlab", "evaluate", "--model", "zoo:digits-cnn", "--data", "digits", "--limit", "20",
                           "--suite", CLEAN, "--out", str(out), "--quiet", "--no-report", "--device", "cpu", *extra],
                          capture_output=True, text=True, timeout=300, env={**os.environ, **env})


def test_broken_tracking_store_warns_in_one_line_and_keeps_the_exit_code(tmp_path):
    bad = tmp_path / "broken.db"
    bad.write_bytes(b"not a sqlite file" * 200)
    r = _evaluate_process(tmp_path / "o", env={"MLFLOW_TRACKING_URI": f"sqlite:///{bad}"})
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "scorecard stands" in lines[0] and "Traceback" not in r.stderr, r.stderr
    assert json.loads((tmp_path / "o" / "scorecard.json").read_text())["run"]["complete"] is True


def test_unreachable_tracking_server_fails_fast(tmp_path, monkeypatch):
    """One bounded connection attempt decides (MLflow's own retries took more than 150 s)."""
    import socket

    from robustlab.errors import RobustlabError
    from robustlab.tracking import mlflow_log

    seen = []

    def refuse(addr, timeout=None):
        seen.append((addr, timeout))
        raise socket.timeout("timed out")

    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(RobustlabError, match="not reachable"):
        mlflow_log.check_reachable("http://10.255.255.1:5000")
    assert seen == [(("10.255.255.1", 5000), mlflow_log.CONNECT_TIMEOUT)] and mlflow_log.CONNECT_TIMEOUT <= 10
    mlflow_log.check_reachable("sqlite:///x.db")  # local stores need no network
    assert len(seen) == 1


def test_unreachable_tracking_server_keeps_the_finished_run(tmp_path):
    r = _evaluate_process(tmp_path / "o", "--mlflow-uri", "http://127.0.0.1:9", env={})  # port 9 (discard): refused
    assert r.returncode == 0 and (tmp_path / "o" / "scorecard.json").is_file(), r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "not reachable" in lines[0], r.stderr


def test_concurrent_runs_on_one_tracking_store_both_finish(tmp_path):
    """Two runs at once, each with its own --out, log to one SQLite tracking store (the store a team
    shares through MLFLOW_TRACKING_URI): both exit 0 with their scorecards and both are recorded.
    Without a lock, MLflow's first-use migration ran twice at once: both warned, neither was recorded."""
    store = tmp_path / "shared-mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}"}
    procs = [subprocess.Popen([sys.executable, "-m", "robustlab", "evaluate", "--model", "zoo:digits-cnn", "--data", "digits", "--limit", "20",
                               "--suite", CLEAN, "--out", str(tmp_path / f"o{i}"), "--quiet", "--no-report", "--device", "cpu", "--seed", str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
    for i, p in enumerate(procs):
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert not lines, err
        assert json.loads((tmp_path / f"o{i}" / "scorecard.json").read_text())["run"]["complete"] is True
    import sqlite3

    with sqlite3.connect(store) as db:
        assert db.execute("select count(*) from runs").fetchone()[0] == 2
