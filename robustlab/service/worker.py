"""The embedded worker: a process that takes queued jobs from the database, runs each in its own
child process (:mod:`robustlab.service.runjob`), reports progress and heartbeats, and retries jobs
whose worker died (their heartbeat went stale) from their stored batch results.

Claiming is one conditional ``UPDATE ... WHERE state = 'queued'``, so two workers never take the
same job; ending is one transaction that checks the job is still this worker's, so a job ends
exactly once.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from . import warm
from .db import Database
from .models import Job, JobState, Version, utcnow
from .settings import Settings
from .warm import Launcher

log = logging.getLogger(__name__)


def _aware(t: datetime | None) -> datetime | None:
    return t if t is None or t.tzinfo else t.replace(tzinfo=timezone.utc)


class Worker:
    """One worker process (``robustlab worker --data-dir DIR``); :meth:`run_forever` loops."""

    def __init__(self, settings: Settings, *, name: str | None = None, device: str = "auto", poll_s: float = 0.5, heartbeat_s: float = 1.0,
                 warm: bool = True) -> None:
        self.settings = settings
        self.db = Database(settings.database_url)
        self.name = name or f"{socket.gethostname()}:{os.getpid()}"
        self.device = device
        self.poll_s = poll_s
        self.heartbeat_s = heartbeat_s
        self._tracking_ready = False
        #: ``robustlab evaluate`` runs fork from a warm launcher (imports paid once per worker, not per job)
        self.warm = warm
        self._launcher: Launcher | None = None

    def launcher(self) -> Launcher:
        if self._launcher is None:
            self._launcher = Launcher()
        return self._launcher

    def close(self) -> None:
        """Stop the warm launcher (and any run it still has)."""
        if self._launcher is not None:
            self._launcher.close()
            self._launcher = None

    def reap(self) -> int:
        """Requeue (or fail, when its attempts are used up) every running job whose heartbeat is stale."""
        cutoff = utcnow() - timedelta(seconds=self.settings.heartbeat_timeout_s)
        n = 0
        with self.db.session() as s:
            for job in s.scalars(select(Job).where(Job.state == JobState.RUNNING)):
                hb = _aware(job.heartbeat_at)
                if hb is not None and hb >= cutoff:
                    continue
                if job.attempts >= self.settings.job_attempts:
                    job.state, job.finished_at = JobState.FAILED, utcnow()
                    job.message = f"worker {job.worker} was lost {job.attempts} times; giving up"
                else:
                    job.state = JobState.QUEUED
                    job.message = f"worker {job.worker} was lost; queued again (resumes from stored batch results)"
                job.worker = None
                n += 1
        return n

    def exists(self, job_id: str) -> bool:
        with self.db.session() as s:
            return s.get(Job, job_id) is not None

    def claim(self, job_id: str | None = None) -> str | None:
        """Take ``job_id`` (or the oldest queued job) if it is still queued; its id, else ``None``."""
        with self.db.session() as s:
            cand = job_id if job_id is not None else s.scalar(select(Job.id).where(Job.state == JobState.QUEUED).order_by(Job.created_at).limit(1))
            if cand is None:
                return None
            now = utcnow()
            res = s.execute(update(Job).where(Job.id == cand, Job.state == JobState.QUEUED)
                            .values(state=JobState.RUNNING, worker=self.name, attempts=Job.attempts + 1, heartbeat_at=now, started_at=now,
                                    progress=0.0, message="starting"))
            return cand if getattr(res, "rowcount", 0) == 1 else None

    def prepare(self) -> None:
        """What every job needs of this worker, done before it claims one (a claimed job gets no
        heartbeat until its run starts): the service's MLflow experiment, and the warm launcher."""
        if not self._tracking_ready:
            from .bootstrap import ensure_mlflow_experiment

            for attempt in range(6):
                try:
                    ensure_mlflow_experiment(self.settings)
                    break
                except Exception as exc:  # noqa: BLE001 - workers starting together race to create MLflow's tables
                    if attempt == 5:
                        raise
                    log.warning("MLflow store not ready (%s: %s); retrying", type(exc).__name__, " ".join(str(exc).split())[:200])
                    time.sleep(1.0 + attempt)
            self._tracking_ready = True
        if self.warm:
            self.launcher().ensure_started()  # pay the imports before the first job, not during it

    def run_once(self) -> bool:
        """Reap, then claim and run one job; ``False`` when the queue was empty."""
        self.reap()
        self.prepare()
        job_id = self.claim()
        if job_id is None:
            return False
        try:
            self.execute(job_id)
        except OperationalError:
            raise  # the database is away: the job keeps its state; if this worker stays away, it is reaped
        except Exception as exc:  # noqa: BLE001 - a failure of this worker, not of the run: hand the job back
            log.exception("job %s: the worker failed", job_id)
            self._hand_back(job_id, f"the worker failed ({type(exc).__name__}: {' '.join(str(exc).split())[:200]})")
        return True

    def run_forever(self, *, max_jobs: int | None = None) -> None:
        done = 0
        try:
            while max_jobs is None or done < max_jobs:
                try:
                    if self.run_once():
                        done += 1
                    else:
                        time.sleep(self.poll_s)
                except OperationalError as exc:  # the database is away: keep the job's state, retry later
                    log.warning("database unavailable (%s); retrying in 5 s", " ".join(str(exc).split())[:200])
                    time.sleep(5)
                except Exception:  # noqa: BLE001 - e.g. the MLflow store or the launcher cannot start: the worker stays
                    log.exception("worker pass failed; retrying in 5 s")
                    time.sleep(5)
        finally:
            self.close()

    def _hand_back(self, job_id: str, why: str) -> None:
        """Queue a job this worker claimed again (or fail it when its attempts are used up)."""
        with self.db.session() as s:
            job = self._mine(s, job_id)
            if job is None:
                return
            if job.attempts >= self.settings.job_attempts:
                job.state, job.exit_code, job.finished_at = JobState.FAILED, 4, utcnow()
                job.message = f"{why}; failed {job.attempts} times, giving up"[:2000]
            else:
                job.state, job.worker, job.message = JobState.QUEUED, None, f"{why}; queued again"[:2000]

    def _mine(self, s: object, job_id: str) -> Job | None:
        from sqlalchemy.orm import Session

        assert isinstance(s, Session)
        job = s.get(Job, job_id, populate_existing=True)
        return job if job is not None and job.state is JobState.RUNNING and job.worker == self.name else None

    def _fail(self, job_id: str, message: str) -> None:
        with self.db.session() as s:
            job = self._mine(s, job_id)
            if job is not None:
                job.state, job.exit_code, job.finished_at, job.message = JobState.FAILED, 4, utcnow(), message

    def execute(self, job_id: str) -> None:
        from . import runjob
        from .finalize import baseline_path, finalize

        st = self.settings
        if not self._tracking_ready:  # a caller that claimed without run_once
            self.prepare()
        with self.db.session() as s:
            job = s.get(Job, job_id)
            assert job is not None
            ver = s.get(Version, job.version_id)
            assert ver is not None
            out = runjob.job_out(st, job)
            base = baseline_path(s, st, job)
            resume = job.attempts > 1 and (out / "results.sqlite").is_file()
            argv = runjob.command_for(st, job, ver, baseline_path=base, device=self.device, resume=resume)
        log_path = st.jobs_dir / job_id / "worker.log"
        proc: runjob.JobProcess
        if self.warm and argv[:3] == [sys.executable, "-m", "robustlab"]:
            proc, prog, reader = warm.start(self.launcher(), argv[3:], log_path)
        else:  # torchrun for several GPUs, or a cold worker: a fresh interpreter
            proc, prog, reader = runjob.start(argv, log_path)
        log.info("job %s: started %s", job_id, " ".join(argv))
        try:
            while proc.poll() is None:
                if runjob.wait_for(proc, self.heartbeat_s) is not None:
                    break  # ended: no need to sleep out the heartbeat period
                try:
                    with self.db.session() as s:
                        job = self._mine(s, job_id)
                        if job is None:  # cancelled, or reaped and given to another worker
                            _stop(proc)
                            return
                        job.heartbeat_at, job.progress, job.message = utcnow(), prog.fraction, prog.message
                except OperationalError:
                    log.warning("job %s: cannot report progress (database unavailable); the run goes on", job_id)
        except BaseException:  # this worker fails or is interrupted: its run goes with it
            _stop(proc)
            raise
        reader.join(timeout=10)
        rc = proc.returncode
        with self.db.session() as s:
            job = self._mine(s, job_id)
            if job is None:
                return
            job.mlflow_run_id = prog.mlflow_run_id
            if rc in FINAL_OK:
                try:
                    finalize(s, st, job, runjob.job_out(st, job), exit_code=rc, baseline_path=base)
                except IntegrityError:
                    s.rollback()
                    return  # another attempt already recorded this job's scorecard
                except Exception as exc:  # noqa: BLE001 - a job whose evidence cannot be stored fails; the worker goes on
                    s.rollback()
                    log.exception("job %s: storing the result failed", job_id)
                    self._fail(job_id, f"the run finished but its result could not be stored ({type(exc).__name__}: {' '.join(str(exc).split())[:300]})")
                    return
                job.state, job.exit_code, job.progress = JobState.SUCCEEDED, rc, 1.0
                job.message = {0: "passed", 1: "gate failed", 3: "inconclusive"}.get(rc, "done")
            elif rc == 2 and LOCKED in runjob.last_error(prog) and job.attempts < st.job_attempts:
                # an earlier attempt still held the job's folder (its worker lost the database for a
                # while and was replaced): it stops when it sees the job is no longer its own
                job.state, job.worker = JobState.QUEUED, None
                job.message = "the job's folder was still in use by an earlier attempt; queued again"
                return
            elif rc == 2:
                job.state, job.exit_code, job.message = JobState.FAILED, 2, runjob.last_error(prog, st)
            elif job.attempts >= st.job_attempts:
                job.state, job.exit_code, job.message = JobState.FAILED, 4, f"run crashed {job.attempts} times (exit {rc}): {runjob.last_error(prog, st)}"
            else:
                job.state, job.worker = JobState.QUEUED, None
                job.message = f"run crashed (exit {rc}); queued again, resumes from stored batch results"
                return
            job.finished_at = utcnow()


def _stop(proc: object) -> None:
    from . import runjob

    if isinstance(proc, warm.WarmRun):
        warm.stop(proc)
    else:
        assert isinstance(proc, subprocess.Popen)
        runjob.stop(proc)


FINAL_OK = (0, 1, 3)
#: what evaluate says when another run holds the output folder (robustlab.store.OutputLockedError)
LOCKED = "is in use by another run"
