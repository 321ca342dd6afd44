"""Progress off a terminal (CI logs, ``nohup``, the service): a long loop logs a line at most every
ROBUSTLAB_PROGRESS_SECONDS; before, an hour-long check printed nothing between its start and its end."""

import io
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from robustlab.progress_lines import make_progress
from robustlab.service.runjob import Progress, consume_line

PLUGINS = str(Path(__file__).parent / "plugins")
CLEAN = str(Path(__file__).parent / "suites" / "clean.yaml")


@pytest.fixture()
def lines(monkeypatch):
    """The robustlab.progress records, with stderr not a terminal."""
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # StringIO.isatty() is False
    got: list[str] = []

    class H(logging.Handler):
        def emit(self, record):
            got.append(record.getMessage())

    plog = logging.getLogger("robustlab.progress")
    h, level = H(), plog.level
    plog.addHandler(h)
    plog.setLevel(logging.INFO)
    yield got
    plog.removeHandler(h)
    plog.setLevel(level)


def _slow(n, dt):
    for i in range(n):
        time.sleep(dt)
        yield i


def test_a_long_loop_logs_lines_with_count_and_time_left(lines, monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_PROGRESS_SECONDS", "0.05")
    out = list(make_progress(False)(_slow(6, 0.03), total=6, desc="pgd_linf eps_0.03"))
    assert out == list(range(6))  # every item, in order
    assert 2 <= len(lines) <= 6, lines
    assert all(ln.startswith("progress: pgd_linf eps_0.03: ") for ln in lines), lines
    assert any("/6 (" in ln and "elapsed" in ln and "left" in ln for ln in lines), lines


def test_a_short_loop_quiet_runs_and_zero_print_nothing(lines, monkeypatch):
    monkeypatch.delenv("ROBUSTLAB_PROGRESS_SECONDS", raising=False)
    assert list(make_progress(False)(range(1000), total=1000, desc="clean")) == list(range(1000))  # within the default 60 s
    monkeypatch.setenv("ROBUSTLAB_PROGRESS_SECONDS", "0.01")
    assert list(make_progress(True)(_slow(3, 0.02), total=3)) == [0, 1, 2]  # --quiet
    monkeypatch.setenv("ROBUSTLAB_PROGRESS_SECONDS", "0")
    assert list(make_progress(False)(_slow(3, 0.02), total=3)) == [0, 1, 2]  # turned off
    monkeypatch.setenv("ROBUSTLAB_PROGRESS_SECONDS", "soon")  # not a number: the default, not a crash
    assert list(make_progress(False)(range(5), total=5)) == list(range(5))
    assert lines == []


def test_the_service_shows_the_line_in_the_jobs_message():
    prog = Progress()
    consume_line(prog, b"[2/4] pgd_linf (pgd) ...")
    assert prog.message == "check 2/4: pgd_linf (pgd) ..." and prog.fraction == 0.25
    consume_line(prog, b"progress: pgd_linf eps_0.0314: 30/79 (38%), 6m10s elapsed, about 10m05s left")
    assert prog.message == "check 2/4: pgd_linf (pgd) ...; pgd_linf eps_0.0314: 30/79 (38%), 6m10s elapsed, about 10m05s left"
    assert prog.fraction == 0.25
    consume_line(prog, b"[3/4] corruption (corruption) ...")
    assert prog.message == "check 3/4: corruption (corruption) ..."


def test_evaluate_in_a_log_prints_progress_lines(tmp_path):
    env = {**os.environ, "PYTHONPATH": PLUGINS + os.pathsep + os.environ.get("PYTHONPATH", ""), "MLFLOW_DISABLE_TELEMETRY": "true",
           "ROBUSTLAB_PROGRESS_SECONDS": "0.000001"}
    args = [sys.executable, "-m", "robustlab", "evaluate", "--model", "zoo:digits-cnn", "--suite", CLEAN, "--limit", "60", "--batch-size", "20",
            "--no-mlflow", "--no-report", "--device", "cpu"]
    r = subprocess.run([*args, "--out", str(tmp_path / "a")], env=env, capture_output=True, text=True, timeout=300)  # stderr is a pipe
    assert r.returncode == 0, r.stderr[-2000:]
    got = [ln for ln in r.stderr.splitlines() if ln.startswith("progress: ")]
    assert [ln.split(",")[0] for ln in got] == ["progress: clean: 1/3 (33%)", "progress: clean: 2/3 (67%)", "progress: clean: 3/3 (100%)"], r.stderr
    r = subprocess.run([*args, "--quiet", "--out", str(tmp_path / "b")], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "progress: " not in r.stderr, r.stderr[-2000:]


def test_time_left_after_resume_counts_the_items_that_were_computed(lines, monkeypatch):
    """Under --resume the stored batches come back at once: 30 of them, then 5 that take 2 s each, 5 left.
    The time left is about 5 x 2 s; averaging over all 35 items done said 1.4 s."""
    clock = [1000.0]
    monkeypatch.setattr("robustlab.runner.time.monotonic", lambda: clock[0])
    monkeypatch.setenv("ROBUSTLAB_PROGRESS_SECONDS", "1")

    def resumed():
        for i in range(40):
            clock[0] += 0.001 if i < 30 else 2.0  # a stored batch, then a computed one
            yield i

    assert list(make_progress(False)(resumed(), total=40, desc="corruption")) == list(range(40))
    last = [ln for ln in lines if "35/40" in ln]
    assert last and last[-1].endswith("about 10s left"), lines


def test_time_left_of_items_of_different_cost_is_their_mean(lines, monkeypatch):
    """Items that all do work (a cheap and a dear corruption alternating) are all counted: 1 s and 3 s, so 2 s each."""
    clock = [0.0]
    monkeypatch.setattr("robustlab.runner.time.monotonic", lambda: clock[0])
    monkeypatch.setenv("ROBUSTLAB_PROGRESS_SECONDS", "1")

    def mixed():
        for i in range(20):
            clock[0] += 1.0 if i % 2 == 0 else 3.0
            yield i

    assert list(make_progress(False)(mixed(), total=20, desc="corruption")) == list(range(20))
    assert any(ln.startswith("progress: corruption: 10/20 (50%), 20s elapsed, about 20s left") for ln in lines), lines
