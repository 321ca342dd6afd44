"""How a worker ends a job, with a real worker (warm launcher, real ``robustlab evaluate`` runs on
zoo:digits-cnn): a retry that finds the job's folder still locked by an earlier attempt's run
waits for it instead of failing as an input error (and says so if it gives up); a cancel that
lands while the result is stored stands; a run that crashes with exit 1 is retried, not taken for
a failed gate; a job message never names the server's data folder."""

from __future__ import annotations

import fcntl
import io
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from service_helpers import Service, make_service  # noqa: E402

from robustlab.service.worker import Worker  # noqa: E402

POLICY = b"rules:\n  - metric: clean/accuracy\n    op: '>='\n    threshold: 0.5\n"


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, Worker]]:
    svc = make_service(tmp_path_factory.mktemp("lifecycle") / "data")
    w = Worker(svc.settings, poll_s=0.1, heartbeat_s=0.2)  # warm: the launcher's imports are paid once for the module
    try:
        yield svc, w
    finally:
        w.close()


def _submit(svc: Service, version: str, *, policy: bool = False) -> str:
    r = svc.client.post("/api/v1/projects/alpha/jobs", headers=svc.h("sub-a"),
                        data={"model_name": "digits", "version": version, "spec": "zoo:digits-cnn", "suite": "clean", "limit": "20"},
                        files={"policy": ("gate.yaml", io.BytesIO(POLICY))} if policy else None)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _run(w: Worker, jid: str) -> None:
    """Claim and run this job (not whatever else an earlier test left queued)."""
    assert w.claim(jid) == jid
    w.execute(jid)


def _job(svc: Service, jid: str) -> dict[str, Any]:
    return dict(svc.client.get(f"/api/v1/jobs/{jid}", headers=svc.h("aud-a")).json())


class _EarlierRun:
    """What a stalled earlier attempt's run leaves: the job's output folder locked (flock), as evaluate locks it."""

    def __init__(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.f = open(out / ".robustlab.lock", "a+", encoding="utf-8")
        fcntl.flock(self.f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.f.write("pid 4242 on earlier-host since 2024-01-01T00:00:00: robustlab evaluate\n")
        self.f.flush()

    def release(self) -> None:
        self.f.close()


@pytest.mark.timeout(300)
def test_a_retry_that_finds_the_folder_locked_waits_for_the_earlier_run_then_gives_up_honestly(env: tuple[Service, Worker]) -> None:
    svc, w = env
    # the earlier run ends while this attempt waits: the job then runs, on its first attempt
    jid = _submit(svc, "locked")
    held = _EarlierRun(svc.settings.jobs_dir / jid / "out")
    t = threading.Thread(target=_run, args=(w, jid))
    t.start()
    deadline = time.time() + 120
    while t.is_alive() and "waiting for an earlier attempt" not in _job(svc, jid)["message"] and time.time() < deadline:
        time.sleep(0.2)
    job = _job(svc, jid)
    assert job["state"] == "running" and "pid 4242 on earlier-host" in job["message"], job
    held.release()
    t.join(timeout=120)
    job = _job(svc, jid)
    assert job["state"] == "succeeded" and job["exit_code"] == 0 and job["attempts"] == 1 and job["scorecard"], job
    # the folder stays locked: after lock_wait_s the job fails as the service's failure, not an input error
    jid = _submit(svc, "stuck")
    held = _EarlierRun(svc.settings.jobs_dir / jid / "out")
    w.lock_wait_s = 2.0
    try:
        _run(w, jid)
    finally:
        w.lock_wait_s = 1800.0
        held.release()
    job = _job(svc, jid)
    assert job["state"] == "failed" and job["exit_code"] == 4 and job["attempts"] == 1, job
    assert "earlier attempt's run (pid 4242 on earlier-host)" in job["message"] and "not an input error" in job["message"], job


@pytest.mark.timeout(300)
def test_a_cancel_that_lands_while_the_result_is_stored_stands(env: tuple[Service, Worker], monkeypatch: pytest.MonkeyPatch) -> None:
    import robustlab.service.finalize as fin

    svc, w = env
    jid = _submit(svc, "cancelled")
    entered, cancelled = threading.Event(), threading.Event()
    real = fin.finalize

    def slow_finalize(*a: Any, **k: Any) -> Any:
        entered.set()
        assert cancelled.wait(60)
        return real(*a, **k)

    monkeypatch.setattr(fin, "finalize", slow_finalize)
    t = threading.Thread(target=_run, args=(w, jid))
    t.start()
    assert entered.wait(120), _job(svc, jid)
    r = svc.client.post(f"/api/v1/jobs/{jid}/cancel", headers=svc.h("sub-a"))
    assert r.status_code == 200 and r.json()["state"] == "cancelled", r.text
    cancelled.set()
    t.join(timeout=60)
    job = _job(svc, jid)
    assert job["state"] == "cancelled" and job["scorecard"] is None and job["message"].startswith("cancelled by"), job


@pytest.mark.timeout(300)
def test_a_warm_run_that_crashes_with_exit_1_is_retried_not_taken_for_a_failed_gate(env: tuple[Service, Worker],
                                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import robustlab.service.runjob as runjob

    svc, w = env
    jid = _submit(svc, "crash", policy=True)
    out = svc.settings.jobs_dir / jid / "out"
    # --debug: the error escapes robustlab's handler, so the launcher's child ends as an uncaught exception does (exit 1)
    argv = [sys.executable, "-m", "robustlab", "--debug", "evaluate", "--model", "zoo:no-such-model", "--suite", "clean", "--out", str(out)]
    monkeypatch.setattr(runjob, "command_for", lambda *_a, **_k: argv)
    _run(w, jid)
    job = _job(svc, jid)
    assert job["state"] == "queued" and job["attempts"] == 1 and job["scorecard"] is None, job
    assert "run crashed (exit 1, no gate result written)" in job["message"], job


@pytest.mark.timeout(120)
def test_a_result_that_cannot_be_stored_names_no_server_path(env: tuple[Service, Worker], monkeypatch: pytest.MonkeyPatch) -> None:
    import robustlab.service.finalize as fin
    import robustlab.service.runjob as runjob

    svc, _w = env
    w = Worker(svc.settings, poll_s=0.1, heartbeat_s=0.2, warm=False)  # a stand-in command, not robustlab: no launcher
    jid = _submit(svc, "unstored")
    missing = svc.settings.jobs_dir / jid / "out" / "scorecard.json"
    monkeypatch.setattr(runjob, "command_for", lambda *_a, **_k: [sys.executable, "-c", "pass"])

    def broken(*_a: Any, **_k: Any) -> Any:
        raise FileNotFoundError(2, "No such file or directory", str(missing))

    monkeypatch.setattr(fin, "finalize", broken)
    _run(w, jid)
    job = _job(svc, jid)
    assert job["state"] == "failed" and job["exit_code"] == 4, job
    assert str(svc.settings.data_dir) not in job["message"] and f"DATA/jobs/{jid}/out/scorecard.json" in job["message"], job
