"""The worker's side of the warm launcher (:mod:`robustlab.commands.launcher`): start it once, ask it
for one child per job, and give the worker a :class:`WarmRun` that behaves like the
:class:`subprocess.Popen` of a cold run (``pid``, ``poll``, ``wait``, ``returncode``), plus a
thread that follows the job's log for progress (the child writes its stderr there itself)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from .runjob import Progress, consume_line, job_env

log = logging.getLogger(__name__)
#: the return code of a run whose launcher died under it (as if killed)
LOST = -int(signal.SIGKILL)


class LauncherUnavailable(RuntimeError):
    """The warm launcher could not be started or stopped answering."""


class WarmRun:
    """One job's child of the launcher, seen like a :class:`subprocess.Popen`."""

    def __init__(self, run_id: int) -> None:
        self.id = run_id
        self.pid = -1
        self.returncode: int | None = None
        self.started = threading.Event()
        self.ended = threading.Event()

    def _end(self, rc: int) -> None:
        if self.returncode is None:
            self.returncode = rc
        self.started.set()
        self.ended.set()

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self.ended.wait(timeout):
            raise subprocess.TimeoutExpired(["robustlab"], timeout or 0.0)
        assert self.returncode is not None
        return self.returncode


def pdeathsig() -> None:  # pragma: no cover - runs in a child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Launcher:
    """A worker's warm launcher: started on first use, started again if it died."""

    def __init__(self, *, start_timeout_s: float = 300.0) -> None:
        self.start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._runs: dict[int, WarmRun] = {}
        self._next = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def ensure_started(self) -> int:
        """Start the launcher now if it is not running; its pid."""
        with self._lock:
            return self._ensure().pid

    def _ensure(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        # PR_SET_PDEATHSIG follows the thread that forked: only from the main thread, which lives as
        # long as the worker (from another thread, end-of-file on its stdin stops it)
        linux_main = sys.platform.startswith("linux") and threading.current_thread() is threading.main_thread()
        proc = subprocess.Popen([sys.executable, "-m", "robustlab.commands.launcher"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                env=job_env(), cwd=os.path.expanduser("~") if os.path.isdir(os.path.expanduser("~")) else "/",
                                preexec_fn=pdeathsig if linux_main else None)
        assert proc.stdout is not None
        ready: list[bytes] = []
        t = threading.Thread(target=lambda: ready.append(proc.stdout.readline()) if proc.stdout else None, daemon=True)
        t.start()
        t.join(self.start_timeout_s)
        if not ready or not ready[0].startswith(b'{"ready"'):
            proc.kill()
            proc.wait()
            raise LauncherUnavailable(f"the warm job launcher did not start (got {ready[0][:200]!r})" if ready else "the warm job launcher did not start in time")
        self._proc = proc
        threading.Thread(target=self._read, args=(proc, proc.stdout), daemon=True, name="robustlab-launcher").start()
        log.info("warm launcher %d ready", proc.pid)
        return proc

    def _read(self, proc: subprocess.Popen[bytes], out: IO[bytes]) -> None:
        for raw in out:
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            run = self._runs.get(int(msg.get("id", -1)))
            if run is None:
                continue
            if "pid" in msg:
                run.pid = int(msg["pid"])
                run.started.set()
            if "rc" in msg:
                self._runs.pop(run.id, None)
                run._end(int(msg["rc"]))
        proc.wait()
        with self._lock:  # the launcher is gone: so are its children (they die with it)
            for run in list(self._runs.values()):
                if run.pid > 0:
                    _kill_group(run.pid)
                run._end(LOST)
            self._runs.clear()

    def running(self) -> list[int]:
        """The pids of the runs now alive."""
        with self._lock:
            return [r.pid for r in self._runs.values() if r.pid > 0 and r.returncode is None]

    def start(self, argv: list[str], *, cwd: Path, log_path: Path) -> WarmRun:
        """Run ``robustlab ARGV`` in a fresh child of the launcher, stderr appended to ``log_path``."""
        with self._lock:
            proc = self._ensure()
            self._next += 1
            run = WarmRun(self._next)
            self._runs[run.id] = run
            assert proc.stdin is not None
            try:
                proc.stdin.write((json.dumps({"id": run.id, "argv": argv, "cwd": str(cwd), "log": str(log_path)}) + "\n").encode())
                proc.stdin.flush()
            except (BrokenPipeError, OSError):
                self._runs.pop(run.id, None)
                run._end(LOST)
                return run
        if not run.started.wait(60):
            raise LauncherUnavailable("the warm job launcher did not start the job within 60 s")
        return run

    def close(self) -> None:
        with self._lock:
            if self._proc is not None and self._proc.stdin is not None:
                try:
                    self._proc.stdin.close()  # end-of-file: the launcher stops its children and exits
                except OSError:
                    pass
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None


def _kill_group(pid: int) -> None:
    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def start(launcher: Launcher, argv: list[str], log_path: Path) -> tuple[WarmRun, Progress, threading.Thread]:
    """Like :func:`robustlab.service.runjob.start` for a ``robustlab ...`` command line, on the launcher."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.touch()
    offset = log_path.stat().st_size  # the log keeps earlier attempts; progress is this one's
    run = launcher.start(argv, cwd=log_path.parent, log_path=log_path)
    prog = Progress()

    def follow() -> None:
        with open(log_path, "rb") as f:
            f.seek(offset)
            pending = b""
            while True:
                ended = run.poll() is not None
                chunk = f.read()
                if chunk:
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for raw in lines:
                        consume_line(prog, raw)
                elif ended:
                    if pending:
                        consume_line(prog, pending)
                    return
                else:
                    time.sleep(0.1)

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    return run, prog, t


def stop(run: WarmRun) -> None:
    """Kill a run's whole process group and wait for the launcher to report it."""
    if run.pid > 0:
        _kill_group(run.pid)
    try:
        run.wait(timeout=30)
    except subprocess.TimeoutExpired:
        log.warning("warm run %d did not report its end after SIGKILL", run.pid)
