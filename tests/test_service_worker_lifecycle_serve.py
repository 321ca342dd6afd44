"""``robustlab serve`` watches its embedded workers (real server and workers on loopback): a worker
killed with ``kill -9`` is logged and started again and the job it held is queued again at once;
the server itself requeues stale jobs while no worker can; ``/readyz`` answers 503 while no
embedded worker is alive, and a worker that dies at start is restarted with a back-off."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from service_helpers import ENV, RL, TEST_SUITES, seed  # noqa: E402

from robustlab.service.db import Database  # noqa: E402
from robustlab.service.models import Job, JobState, utcnow  # noqa: E402
from robustlab.service.settings import Settings  # noqa: E402


def _workers(serve_pid: int) -> list[int]:
    out = subprocess.run(["ps", "--ppid", str(serve_pid), "-o", "pid=,args="], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if " worker " in line]


def _wait(what: Any, timeout: float, every: float = 0.2) -> Any:
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = what()
        if got:
            return got
        time.sleep(every)
    return what()


def _own(db: Database, jid: str, worker: str, age_s: float) -> None:
    """Make ``jid`` look claimed by ``worker``, last heard from ``age_s`` ago."""
    with db.session() as s:
        job = s.get(Job, jid)
        assert job is not None and job.state is JobState.QUEUED
        job.state, job.worker, job.attempts, job.heartbeat_at = JobState.RUNNING, worker, 1, utcnow() - timedelta(seconds=age_s)


@pytest.mark.timeout(300)
def test_serve_restarts_dead_workers_requeues_their_jobs_and_is_not_ready_without_one(tmp_path: Path) -> None:
    data, suites, log_path = tmp_path / "data", tmp_path / "suites", tmp_path / "serve.log"
    shutil.copytree(TEST_SUITES, suites)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([*RL, "serve", "--data-dir", str(data), "--port", "0", "--workers", "1", "--suite-dir", str(suites)], env=ENV,
                                stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True)
    try:
        assert proc.stdout is not None
        m = re.search(r"http://[0-9.]+:\d+", proc.stdout.readline())
        assert m
        url = m.group(0)

        def ready() -> int:
            try:
                return httpx.get(url + "/readyz").status_code
            except httpx.HTTPError:
                return 0

        assert _wait(lambda: ready() == 200, 60)
        st = Settings(data_dir=data, suite_dir=suites)
        tokens, db = seed(st), Database(st.database_url)
        c = httpx.Client(base_url=url + "/api/v1", headers={"Authorization": f"Bearer {tokens['sub-a']}"}, timeout=30)
        (w1,) = _wait(lambda: _workers(proc.pid), 30)
        os.kill(w1, signal.SIGSTOP)  # alive but silent: it neither claims nor reaps
        form = {"model_name": "digits", "spec": "zoo:digits-cnn", "suite": "clean", "limit": "20"}
        held, stale = (c.post("/projects/alpha/jobs", data={**form, "version": v}).json()["id"] for v in ("held", "stale"))
        _own(db, held, f"{socket.gethostname()}:{w1}", 0)  # the worker's own job, heartbeat fresh
        _own(db, stale, "lost-host:1", 600)  # a job of a worker gone long ago
        # no worker can reap now: the server does
        assert _wait(lambda: c.get(f"/jobs/{stale}").json()["state"] == "queued", 30), c.get(f"/jobs/{stale}").json()
        assert c.get(f"/jobs/{held}").json()["state"] == "running"
        os.kill(w1, signal.SIGKILL)
        # the job the dead worker held is queued again at once (not after --heartbeat-timeout), and the worker replaced
        assert _wait(lambda: c.get(f"/jobs/{held}").json()["state"] != "running", 10), c.get(f"/jobs/{held}").json()
        w2 = _wait(lambda: [p for p in _workers(proc.pid) if p != w1], 30)
        assert w2, log_path.read_text()
        assert f"embedded worker 1 (pid {w1}) was killed by SIGKILL; starting it again" in log_path.read_text()
        for jid in (held, stale):
            job = _wait(lambda: (lambda j: j if j["state"] in ("succeeded", "failed", "cancelled") else None)(c.get(f"/jobs/{jid}").json()), 180)
            assert job and job["state"] == "succeeded" and job["attempts"] == 2, job
        # a worker that dies at start (its --suite-dir is gone) is restarted with a back-off; meanwhile not ready
        shutil.rmtree(suites)
        os.kill(w2[0], signal.SIGKILL)
        assert _wait(lambda: ready() == 503, 30)
        delays = lambda: [int(d) for d in re.findall(r"exited with status 2; starting it again in (\d+) s", log_path.read_text())]  # noqa: E731
        assert _wait(lambda: len(delays()) >= 2, 30), log_path.read_text()
        assert delays()[1] == 2 * delays()[0], delays()  # backing off, not spinning
        shutil.copytree(TEST_SUITES, suites)
        assert _wait(lambda: ready() == 200 and _workers(proc.pid), 90)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
