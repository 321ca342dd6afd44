"""Remote workers through the distributed queue (Celery on a real Redis server started on
loopback; skipped when redis-server or celery is missing): a job submitted to the API is run by
``robustlab worker --queue URL``; with the broker down the API answers 503 and keeps nothing
half-submitted; once it is back, submissions flow again."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("celery")
pytest.importorskip("redis")

from service_helpers import TEST_SUITES, Service, make_service  # noqa: E402

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


class Redis:
    def __init__(self, root: Path) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server not installed (apt-get install redis-server)")
        self.exe, self.root = exe, root
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen([self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.root), "--save", "", "--appendonly", "no"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 20
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)
            self.proc = None


@pytest.fixture()
def broker(tmp_path: Path) -> Iterator[Redis]:
    r = Redis(tmp_path)
    try:
        yield r
    finally:
        r.stop()


def _submit(svc: Service, version: str) -> Any:
    return svc.client.post("/api/v1/projects/alpha/jobs", headers=svc.h("sub-a"),
                           data={"model_name": "digits", "version": version, "spec": "zoo:digits-cnn", "suite": "clean", "limit": "20"})


def _wait(svc: Service, job_id: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        job: dict[str, Any] = svc.client.get(f"/api/v1/jobs/{job_id}", headers=svc.h("aud-a")).json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not finish: {job}")


@pytest.mark.slow  # a Celery worker and two real evaluate processes: about a minute on a busy 2-core machine
@pytest.mark.timeout(600)
def test_remote_worker_takes_jobs_from_the_queue_and_a_broker_outage_is_a_clean_503(broker: Redis, tmp_path: Path) -> None:
    svc = make_service(tmp_path / "data", queue_url=broker.url)
    worker = subprocess.Popen([sys.executable, "-m", "robustlab", "worker", "--queue", broker.url, "--data-dir", str(svc.settings.data_dir),
                               "--suite-dir", str(TEST_SUITES), "--device", "cpu"], env=ENV, start_new_session=True)
    try:
        r = _submit(svc, "1")
        assert r.status_code == 201, r.text
        job = _wait(svc, r.json()["id"])
        assert job["state"] == "succeeded" and job["attempts"] == 1, job
        assert job["scorecard"]["signature_state"] == "valid-trusted"
        broker.stop()
        down = _submit(svc, "2")
        assert down.status_code == 503, down.text
        assert "queue" in down.json()["detail"] and "unavailable" in down.json()["detail"]
        assert len(svc.client.get("/api/v1/projects/alpha/jobs", headers=svc.h("aud-a")).json()) == 1  # nothing half-submitted
        broker.start()
        r2 = _submit(svc, "2")
        assert r2.status_code == 201, r2.text
        job2 = _wait(svc, r2.json()["id"])  # the worker reconnected to the restarted broker
        assert job2["state"] == "succeeded", job2
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
