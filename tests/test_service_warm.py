"""Warm workers: one launcher per worker imports robustlab/torch/MLflow once and forks one child per
job. Each job is still its own process: a run killed from outside (the OOM killer, a segfault) is
retried from its stored batches and gives the uninterrupted scorecard while the worker and its
launcher go on; a cancelled run's process is killed; the launcher goes with its worker."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from service_helpers import Service, make_service  # noqa: E402
from run_store import stored_batches  # noqa: E402

FORM = {"model_name": "digits", "spec": "zoo:digits-cnn", "suite": "killresume", "batch_size": "20", "seed": "3", "limit": "60"}


def _job(svc: Service, jid: str) -> dict[str, Any]:
    out: dict[str, Any] = svc.client.get(f"/api/v1/jobs/{jid}", headers=svc.h("aud-a")).json()
    return out


def _core(card: dict[str, Any]) -> list[Any]:
    return [(c["id"], c["status"], c["metrics"], c["per_sample"]) for c in card["checks"]]


def _wait(cond: Any, what: str, seconds: float = 300) -> None:
    deadline = time.time() + seconds
    while not cond():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.slow  # the launcher's imports (10-25 s on 2 shared cores), then PGD runs on 60 digits (one killed and resumed)
@pytest.mark.timeout(600)
def test_a_warm_worker_forks_jobs_from_one_launcher_and_survives_killed_and_cancelled_runs(tmp_path: Path) -> None:
    from robustlab.service.worker import Worker

    svc = make_service(tmp_path / "data")
    post = svc.client.post
    w = Worker(svc.settings, poll_s=0.1, heartbeat_s=0.2)
    launcher = w.launcher()
    launcher_pid = launcher.ensure_started()
    try:
        ref = post("/api/v1/projects/alpha/jobs", headers=svc.h("sub-a"), data={**FORM, "version": "ref"}).json()["id"]
        assert w.run_once()
        assert _job(svc, ref)["state"] == "succeeded"
        assert launcher.running() == []

        # a run killed from outside mid-job: the worker survives, the job is queued again and resumes
        jid = post("/api/v1/projects/alpha/jobs", headers=svc.h("sub-a"), data={**FORM, "version": "killed"}).json()["id"]
        t = threading.Thread(target=w.run_once)
        t.start()
        db = svc.settings.jobs_dir / jid / "out" / "results.sqlite"
        _wait(lambda: stored_batches(db) >= 4 or not t.is_alive(), "the run to store its clean batches")  # clean: 3 batches; then PGD
        pids = launcher.running()
        assert t.is_alive() and len(pids) == 1, "the run ended before it could be killed; make it longer"
        assert pids[0] not in (os.getpid(), launcher_pid)
        os.kill(pids[0], signal.SIGKILL)
        t.join(timeout=60)
        assert not t.is_alive()
        job = _job(svc, jid)
        assert job["state"] == "queued" and job["attempts"] == 1 and "exit -9" in job["message"], job
        assert launcher.pid == launcher_pid  # the launcher (and the worker) did not go with the run
        assert w.run_once()
        job = _job(svc, jid)
        assert job["state"] == "succeeded" and job["attempts"] == 2, job
        a = svc.client.get(f"/api/v1/jobs/{ref}/files/scorecard", headers=svc.h("aud-a")).json()
        b = svc.client.get(f"/api/v1/jobs/{jid}/files/scorecard", headers=svc.h("aud-a")).json()
        assert b["run"]["resumed"] is True and _core(a) == _core(b)
        assert job["scorecard"]["signature_state"] == "valid-trusted"

        # cancelling a running job kills its process
        cid = post("/api/v1/projects/alpha/jobs", headers=svc.h("sub-a"), data={**FORM, "version": "cancelled", "limit": "400"}).json()["id"]
        t = threading.Thread(target=w.run_once)
        t.start()
        _wait(lambda: bool(launcher.running()) or not t.is_alive(), "the run to start")
        pid = launcher.running()[0]
        assert post(f"/api/v1/jobs/{cid}/cancel", headers=svc.h("sub-a")).json()["state"] == "cancelled"
        t.join(timeout=60)
        assert not t.is_alive()
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert _job(svc, cid)["scorecard"] is None and launcher.pid == launcher_pid
    finally:
        w.close()
    with pytest.raises(ProcessLookupError):  # closed with its worker
        os.kill(launcher_pid, 0)


@pytest.mark.slow  # two launcher starts: 10-25 s each on 2 shared cores
@pytest.mark.timeout(300)
def test_a_launcher_that_dies_fails_its_run_as_killed_and_is_started_again(tmp_path: Path) -> None:
    """The launcher killed under a run (kill -9, OOM): the run ends as killed (the job is retried),
    its process is gone, and the next run gets a fresh launcher."""
    from robustlab.service.warm import LOST, Launcher

    la = Launcher()
    try:
        first = la.ensure_started()
        log = tmp_path / "run.log"
        run = la.start(["evaluate", "--model", "zoo:digits-cnn", "--suite", "killresume", "--limit", "400", "--out", str(tmp_path / "out")],
                       cwd=tmp_path, log_path=log)
        assert run.pid > 0 and la.running() == [run.pid]
        os.kill(first, signal.SIGKILL)
        assert run.wait(timeout=30) == LOST
        _wait(lambda: not Path(f"/proc/{run.pid}").exists() or "zombie" in _state(run.pid), "the run to die with its launcher", 10)
        again = la.start(["suites"], cwd=tmp_path, log_path=log)
        assert again.wait(timeout=120) == 0 and la.pid not in (None, first)
    finally:
        la.close()


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "gone"


def _submit(svc: Service, version: str) -> str:
    r = svc.client.post("/api/v1/projects/alpha/jobs", headers=svc.h("sub-a"), data={**FORM, "version": version, "suite": "clean"})
    assert r.status_code == 201, r.text
    out: str = r.json()["id"]
    return out


@pytest.mark.timeout(120)
def test_a_worker_sets_up_tracking_before_it_claims_and_hands_back_a_job_it_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Found by bench/service_load.py: two workers starting together raced to create MLflow's
    store; the loser raised after claiming a job, so the job sat 'running' with no heartbeat until
    reaped, again and again, and a worker died of it."""
    import sys

    from sqlalchemy.exc import OperationalError

    import robustlab.service.bootstrap as boot
    import robustlab.service.finalize as fin
    import robustlab.service.runjob as runjob
    from robustlab.service.worker import Worker

    svc = make_service(tmp_path / "data")
    calls: list[int] = []

    def racing(_settings: object) -> None:
        calls.append(1)
        if len(calls) <= 2:
            raise OperationalError("CREATE TABLE experiments", {}, Exception("database is locked"))

    monkeypatch.setattr(boot, "ensure_mlflow_experiment", racing)
    monkeypatch.setattr(runjob, "command_for", lambda *_a, **_k: [sys.executable, "-c", "import sys; print('error: bad input', file=sys.stderr); sys.exit(2)"])
    monkeypatch.setattr("robustlab.service.worker.time.sleep", lambda _s: None)
    jid = _submit(svc, "race")
    w = Worker(svc.settings, poll_s=0.1, heartbeat_s=0.2, warm=False)
    assert w.run_once()
    job = _job(svc, jid)
    assert job["state"] == "failed" and job["exit_code"] == 2 and job["attempts"] == 1, job  # ran once, on its first claim
    assert len(calls) == 3

    def broken(*_a: object, **_k: object) -> None:
        raise RuntimeError("disk gone")

    monkeypatch.setattr(fin, "baseline_path", broken)  # a failure of the worker after the claim, before the run
    jid = _submit(svc, "handed-back")
    assert w.run_once()  # the worker goes on
    job = _job(svc, jid)
    assert job["state"] == "queued" and job["attempts"] == 1 and "disk gone" in job["message"], job
    for _ in range(svc.settings.job_attempts):
        w.run_once()
    job = _job(svc, jid)
    assert job["state"] == "failed" and job["exit_code"] == 4 and job["attempts"] == svc.settings.job_attempts, job  # bounded


def _make_store(data_dir: str, barrier: Any, out: Any) -> None:
    from robustlab.service.bootstrap import ensure_mlflow_experiment
    from robustlab.service.settings import Settings

    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401 - imported before the barrier: the calls start together

    barrier.wait(timeout=300)
    try:
        ensure_mlflow_experiment(Settings(data_dir=Path(data_dir)))
        out.put("ok")
    except Exception as exc:  # noqa: BLE001 - reported to the test
        out.put(f"{type(exc).__name__}: {exc}"[:300])


@pytest.mark.slow  # three processes importing MLflow: 15-40 s on 2 shared cores
@pytest.mark.timeout(600)
def test_workers_starting_together_create_one_working_mlflow_store(tmp_path: Path) -> None:
    """Found by bench/service_load.py: two workers creating the MLflow SQLite store at once left it
    half-migrated for good; every later job failed."""
    import multiprocessing as mp

    from mlflow.tracking import MlflowClient

    from robustlab.tracking.mlflow_log import DEFAULT_EXPERIMENT

    ctx = mp.get_context("spawn")
    barrier, out = ctx.Barrier(3), ctx.Queue()
    data = tmp_path / "data"
    procs = [ctx.Process(target=_make_store, args=(str(data), barrier, out)) for _ in range(3)]
    for p in procs:
        p.start()
    got = [out.get(timeout=400) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert got == ["ok"] * 3, got
    client = MlflowClient(tracking_uri=f"sqlite:///{data / 'mlflow.db'}")
    exp = client.get_experiment_by_name(DEFAULT_EXPERIMENT)
    assert exp is not None and exp.artifact_location == (data / "mlartifacts").as_uri()
    run = client.create_run(exp.experiment_id)  # the store works: a run can be logged
    client.log_metric(run.info.run_id, "m", 1.0)
    client.set_terminated(run.info.run_id)
