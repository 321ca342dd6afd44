"""``serve``'s embedded workers: :class:`Supervisor` keeps the worker processes alive (restarting a
dead one with a back-off), hands back the jobs of a worker that died, and reaps stale jobs itself,
so a job is retried even when no worker is left to do it."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence

from .settings import Settings
from .worker import Worker

log = logging.getLogger(__name__)


def _exit_status(rc: int) -> str:
    if rc < 0:
        try:
            return f"was killed by {signal.Signals(-rc).name}"
        except ValueError:
            return f"was killed by signal {-rc}"
    return f"exited with status {rc}"


class Supervisor(threading.Thread):
    """``serve``'s embedded workers: ``n`` processes started with ``argv``; one that dies is logged
    (which, and its exit status), its running jobs are handed back at once, and it is started again
    after a back-off that doubles (up to ``backoff_max_s``) while it keeps dying within ``stable_s``
    of its start, so a worker that crashes at start does not spin. With ``reap``, the server also
    requeues stale jobs every ``reap_every_s`` (what each worker does before it claims a job), so a
    job is retried even while no worker is alive.

    :meth:`start_workers` should be called from the main thread: a worker's ``PR_SET_PDEATHSIG``
    follows the thread that forked it (restarted workers follow this thread, which lives until
    :meth:`stop` has stopped them)."""

    def __init__(self, settings: Settings, argv: Sequence[str], n: int, *, reap: bool = True, check_s: float = 0.5, reap_every_s: float = 5.0,
                 backoff_s: float = 1.0, backoff_max_s: float = 60.0, stable_s: float = 60.0,
                 popen: Callable[[list[str]], subprocess.Popen[bytes]] | None = None) -> None:
        super().__init__(daemon=True, name="robustlab-supervisor")
        self.settings, self.argv, self.n, self.reap = settings, list(argv), n, reap
        self.check_s, self.reap_every_s, self.backoff_s, self.backoff_max_s, self.stable_s = check_s, reap_every_s, backoff_s, backoff_max_s, stable_s
        self._popen = popen or (lambda a: subprocess.Popen(a))
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * n
        self._born = [0.0] * n
        self._next = [0.0] * n
        self._delay = [backoff_s] * n
        self._lock = threading.Lock()
        self._closing = False
        self._last_reap = 0.0
        self.stopped = threading.Event()
        self._reaper = Worker(settings, warm=False, name=f"{socket.gethostname()}:{os.getpid()}:supervisor")

    def start_workers(self) -> None:
        with self._lock:
            for i in range(self.n):
                self._spawn(i)

    def _spawn(self, i: int) -> None:
        self.procs[i] = self._popen(list(self.argv))
        self._born[i] = time.monotonic()

    def alive(self) -> int:
        """How many embedded workers are running now."""
        return sum(1 for p in self.procs if p is not None and p.poll() is None)

    def ready(self) -> bool:
        """No embedded worker asked for, or at least one alive."""
        return self.n == 0 or self.alive() > 0

    def tick(self) -> None:
        lost: list[str] = []
        with self._lock:
            if self._closing:
                return
            now = time.monotonic()
            for i, p in enumerate(self.procs):
                if p is not None and p.poll() is not None:
                    if now - self._born[i] >= self.stable_s:
                        self._delay[i] = self.backoff_s
                    wait = self._delay[i]
                    self._delay[i] = min(wait * 2, self.backoff_max_s)
                    self._next[i], self.procs[i] = now + wait, None
                    log.warning("embedded worker %d (pid %d) %s; starting it again in %.0f s", i + 1, p.pid, _exit_status(p.returncode), wait)
                    lost.append(f"{socket.gethostname()}:{p.pid}")
                elif p is None and now >= self._next[i]:
                    self._spawn(i)
        for name in lost:  # its run died with it (launcher and children die with their worker): retry its jobs now
            n = self._reaper.reap(lost_worker=name)
            if n:
                log.warning("queued %d job(s) of the lost worker %s again", n, name)
        if self.reap and time.monotonic() - self._last_reap >= self.reap_every_s:
            self._last_reap = time.monotonic()
            self._reaper.reap()

    def run(self) -> None:
        while not self.stopped.wait(self.check_s):
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 - a down database: try again next pass
                log.warning("worker supervision pass failed: %s", " ".join(str(exc).split())[:200])

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop supervising, then the workers (SIGTERM, SIGKILL after ``timeout_s``)."""
        with self._lock:
            self._closing = True
            procs = [p for p in self.procs if p is not None]
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.stopped.set()
        if self.is_alive() and threading.current_thread() is not self:
            self.join(timeout=5)
