"""The embedded worker: a process that takes queued jobs from the database, runs each in its own
child process (:mod:`robustlab.service.runjob`), reports progress and heartbeats, and retries jobs
whose worker died (their heartbeat went stale) from their stored batch results.

Claiming is one conditional ``UPDATE ... WHERE state = 'queued'``, so two workers never take the
same job; every later write of the job (heartbeat, end) is one conditional ``UPDATE ... WHERE
state = 'running' AND worker = me AND attempts = this attempt``, so a job ends exactly once and a
cancel or a reap that lands first is never overwritten.

``serve``'s side, which keeps the embedded worker processes alive, is
:class:`robustlab.service.supervisor.Supervisor`.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError, OperationalError

from . import warm
from .db import Database
from .models import Job, JobState, Version, utcnow
from .runjob import Progress
from .settings import Settings
from .warm import Launcher

log = logging.getLogger(__name__)



def _aware(t: datetime | None) -> datetime | None:
    return t if t is None or t.tzinfo else t.replace(tzinfo=timezone.utc)


class Worker:
    """One worker process (``robustlab worker --data-dir DIR``); :meth:`run_forever` loops."""

    def __init__(self, settings: Settings, *, name: str | None = None, device: str = "auto", poll_s: float = 0.5, heartbeat_s: float = 1.0,
                 warm: bool = True, lock_wait_s: float = 1800.0) -> None:
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
        #: how long an attempt waits for an earlier attempt's run to release the job's folder before giving up
        self.lock_wait_s = lock_wait_s

    def launcher(self) -> Launcher:
        if self._launcher is None:
            self._launcher = Launcher()
        return self._launcher

    def close(self) -> None:
        """Stop the warm launcher (and any run it still has)."""
        if self._launcher is not None:
            self._launcher.close()
            self._launcher = None

    def reap(self, *, lost_worker: str | None = None) -> int:
        """Requeue (or fail, when its attempts are used up) every running job whose heartbeat is stale;
        with ``lost_worker``, every running job of that worker instead (its process is known to be gone).

        Each job changes with one conditional ``UPDATE`` (still running, same worker, attempt and
        heartbeat as read), so a job that ended, was cancelled or reported in the meantime is left alone."""
        cutoff = utcnow() - timedelta(seconds=self.settings.heartbeat_timeout_s)
        with self.db.session() as s:
            q = select(Job.id, Job.worker, Job.attempts, Job.heartbeat_at).where(Job.state == JobState.RUNNING)
            if lost_worker is not None:
                q = q.where(Job.worker == lost_worker)
            found: list[tuple[str, str | None, int, datetime | None]] = [(r[0], r[1], r[2], r[3]) for r in s.execute(q)]
        n = 0
        for job_id, worker, attempts, hb in found:
            seen = _aware(hb)
            if lost_worker is None and seen is not None and seen >= cutoff:
                continue
            values: dict[str, Any]
            if attempts >= self.settings.job_attempts:
                values = {"state": JobState.FAILED, "finished_at": utcnow(), "message": f"worker {worker} was lost {attempts} times; giving up"}
            else:
                values = {"state": JobState.QUEUED, "message": f"worker {worker} was lost; queued again (resumes from stored batch results)"}
            stmt = update(Job).where(Job.id == job_id, Job.state == JobState.RUNNING, Job.attempts == attempts,
                                     Job.worker.is_(None) if worker is None else Job.worker == worker,
                                     Job.heartbeat_at.is_(None) if hb is None else Job.heartbeat_at == hb)
            with self.db.session() as s:
                res = s.execute(stmt.values(worker=None, **values).execution_options(synchronize_session=False))
                n += int(getattr(res, "rowcount", 0) == 1)
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
            self._hand_back(job_id, f"the worker failed ({type(exc).__name__}: {self._public(str(exc))[:200]})")
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

    def _public(self, text: str) -> str:
        """``text`` as a job message shows it: the server's data folder as ``DATA`` (as in
        :func:`robustlab.service.runjob.last_error`), on one line."""
        return " ".join(text.replace(str(self.settings.data_dir), "DATA").split())

    def _update(self, s: object, job_id: str, attempt: int, **values: Any) -> bool:
        """Write ``values`` to the job only while it is this worker's running attempt ``attempt``;
        ``False`` (nothing written) when it is not: cancelled, or reaped and maybe running elsewhere."""
        from sqlalchemy.orm import Session

        assert isinstance(s, Session)
        res = s.execute(update(Job).where(Job.id == job_id, Job.state == JobState.RUNNING, Job.worker == self.name, Job.attempts == attempt)
                        .values(**values).execution_options(synchronize_session=False))
        return getattr(res, "rowcount", 0) == 1

    def _hand_back(self, job_id: str, why: str) -> None:
        """Queue a job this worker claimed again (or fail it when its attempts are used up)."""
        with self.db.session() as s:
            job = self._mine(s, job_id)
            if job is None:
                return
            if job.attempts >= self.settings.job_attempts:
                self._update(s, job_id, job.attempts, state=JobState.FAILED, exit_code=4, finished_at=utcnow(),
                             message=f"{why}; failed {job.attempts} times, giving up"[:2000])
            else:
                self._update(s, job_id, job.attempts, state=JobState.QUEUED, worker=None, message=f"{why}; queued again"[:2000])

    def _mine(self, s: object, job_id: str) -> Job | None:
        from sqlalchemy.orm import Session

        assert isinstance(s, Session)
        job = s.get(Job, job_id, populate_existing=True)
        return job if job is not None and job.state is JobState.RUNNING and job.worker == self.name else None

    def _fail(self, job_id: str, message: str, attempt: int | None = None) -> None:
        with self.db.session() as s:
            job = self._mine(s, job_id)
            if job is not None:
                self._update(s, job_id, job.attempts if attempt is None else attempt, state=JobState.FAILED, exit_code=4, finished_at=utcnow(),
                             message=self._public(message)[:2000])

    def _command(self, job_id: str, *, retry: bool) -> tuple[list[str], Path | None]:
        """The job's ``robustlab evaluate`` argv (with ``--resume`` when an earlier run stored batches) and baseline."""
        from . import runjob
        from .finalize import baseline_path
        from .trust import trusted_keys

        st = self.settings
        with self.db.session() as s:
            job = s.get(Job, job_id)
            assert job is not None
            ver = s.get(Version, job.version_id)
            assert ver is not None
            out = runjob.job_out(st, job)
            base = baseline_path(s, st, job)
            resume = (job.attempts > 1 or retry) and (out / "results.sqlite").is_file()
            keys = runjob.write_trusted_keys(trusted_keys(s), st.jobs_dir / job_id / "trusted-keys") if job.policy_key and base is not None else None
            return runjob.command_for(st, job, ver, baseline_path=base, device=self.device, resume=resume, trusted_dir=keys), base

    def _run(self, job_id: str, attempt: int, argv: list[str]) -> tuple[int, Progress] | None:
        """Run ``argv`` for the job, heartbeating; its return code and progress, or ``None`` when the job
        stopped being this attempt's (cancelled, or reaped): its run is then stopped."""
        from . import runjob

        log_path = self.settings.jobs_dir / job_id / "worker.log"
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
                        mine = self._update(s, job_id, attempt, heartbeat_at=utcnow(), progress=prog.fraction, message=prog.message)
                except OperationalError:
                    log.warning("job %s: cannot report progress (database unavailable); the run goes on", job_id)
                    continue
                if not mine:  # cancelled, or reaped and given to another worker
                    _stop(proc)
                    return None
        except BaseException:  # this worker fails or is interrupted: its run goes with it
            _stop(proc)
            raise
        reader.join(timeout=10)
        assert proc.returncode is not None
        return proc.returncode, prog

    def _wait(self, job_id: str, attempt: int, seconds: float, message: str) -> bool:
        """Sleep ``seconds``, heartbeating the job; ``False`` as soon as it is no longer this attempt's."""
        end = time.monotonic() + seconds
        while True:
            try:
                with self.db.session() as s:
                    if not self._update(s, job_id, attempt, heartbeat_at=utcnow(), message=message):
                        return False
            except OperationalError:
                log.warning("job %s: cannot report progress (database unavailable)", job_id)
            left = end - time.monotonic()
            if left <= 0:
                return True
            time.sleep(min(self.heartbeat_s, left))

    def execute(self, job_id: str) -> None:
        from . import runjob

        if not self._tracking_ready:  # a caller that claimed without run_once
            self.prepare()
        with self.db.session() as s:
            job = s.get(Job, job_id)
            assert job is not None
            attempt = job.attempts
        waited, pause, retry = 0.0, 1.0, False
        while True:
            argv, base = self._command(job_id, retry=retry)
            started = time.time()
            ran = self._run(job_id, attempt, argv)
            if ran is None:
                return
            rc, prog = ran
            if not (rc == 2 and LOCKED in runjob.last_error(prog)):
                break
            # an earlier attempt's run still holds the job's folder (its worker stalled or lost the
            # database and was replaced; that run stops when its worker sees the job is no longer its
            # own, or ends): not an input error, and no attempt used up. Wait, heartbeating, and run again
            # (resuming from the batches it stored); give up, as a failure of the service, after lock_wait_s.
            holder = _holder(runjob.last_error(prog))
            if waited >= self.lock_wait_s:
                self._fail(job_id, f"the job's folder was still in use by an earlier attempt's run ({holder}) after {waited:.0f} s of waiting; "
                                   "giving up (not an input error: submit the job again)", attempt)
                return
            pause = min(pause, self.lock_wait_s - waited)
            log.info("job %s: its folder is held by an earlier attempt's run (%s); running again in %.0f s", job_id, holder, pause)
            if not self._wait(job_id, attempt, pause, f"waiting for an earlier attempt's run ({holder}) to release the job's folder"):
                return
            waited += pause
            pause, retry = min(pause * 2, 30.0), True
        self._end(job_id, attempt, rc, prog, base, started)

    def _end(self, job_id: str, attempt: int, rc: int, prog: Progress, base: Path | None, started: float) -> None:
        """Record how the attempt's run ended, in one transaction that changes the job only if it is still
        this attempt's (a cancel or a reap that landed first stands, and no scorecard is recorded)."""
        from . import runjob
        from .finalize import finalize

        st = self.settings
        with self.db.session() as s:
            job = self._mine(s, job_id)
            if job is None or job.attempts != attempt:
                return
            out = runjob.job_out(st, job)
            crashed = rc == 1 and not _gate_ran(job, out, started)  # exit 1 of an uncaught exception, not a gate
            if rc in FINAL_OK and not crashed:
                try:
                    finalize(s, st, job, out, exit_code=rc, baseline_path=base)
                except IntegrityError:
                    s.rollback()
                    return  # another attempt already recorded this job's scorecard
                except Exception as exc:  # noqa: BLE001 - a job whose evidence cannot be stored fails; the worker goes on
                    s.rollback()
                    log.exception("job %s: storing the result failed", job_id)
                    self._fail(job_id, f"the run finished but its result could not be stored ({type(exc).__name__}: {self._public(str(exc))[:300]})", attempt)
                    return
                if not self._update(s, job_id, attempt, state=JobState.SUCCEEDED, exit_code=rc, progress=1.0, finished_at=utcnow(),
                                    mlflow_run_id=prog.mlflow_run_id, message={0: "passed", 1: "gate failed", 3: "inconclusive"}.get(rc, "done")):
                    s.rollback()  # cancelled (or reaped) while the result was being stored: that stands
                    log.warning("job %s: cancelled or taken over while its result was stored; the result is not recorded", job_id)
                return
            how = f"exit {rc}" + (", no gate result written" if crashed else "")
            values: dict[str, Any]
            if rc == 2:
                values = {"state": JobState.FAILED, "exit_code": 2, "message": runjob.last_error(prog, st), "finished_at": utcnow()}
            elif job.attempts >= st.job_attempts:
                values = {"state": JobState.FAILED, "exit_code": 4, "finished_at": utcnow(),
                          "message": f"run crashed {job.attempts} times ({how}): {runjob.last_error(prog, st)}"}
            else:
                values = {"state": JobState.QUEUED, "worker": None, "message": f"run crashed ({how}); queued again, resumes from stored batch results"}
            self._update(s, job_id, attempt, mlflow_run_id=prog.mlflow_run_id, **values)


def _gate_ran(job: Job, out: Path, since: float) -> bool:
    """Whether exit 1 is evaluate's "a release gate failed": the job has a policy and this run wrote
    its scorecard and gate summary. Otherwise exit 1 is what an uncaught exception gives (a fresh
    interpreter, or a warm launcher's child), a crash to retry, never a gate decision."""
    if not job.policy_key:
        return False
    try:
        return all((out / name).stat().st_mtime >= since - 1.0 for name in ("scorecard.json", "gate-summary.md"))
    except OSError:
        return False


def _holder(error: str) -> str:
    """Who holds the job's folder, from evaluate's lock error ("pid N on HOST"), for a job message."""
    import re

    m = re.search(r"pid \d+ on [^\s:;)]+", error)
    return m.group(0) if m else "another process"


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
