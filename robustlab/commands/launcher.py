"""The warm job launcher: a process that imports robustlab, torch and MLflow once, then runs each
job's ``robustlab evaluate`` command line in a child forked from itself, so a small job pays
milliseconds of start-up instead of the ~10-25 s of imports of a fresh interpreter.

Isolation is the same as a fresh process per job: each child is its own process (and process
group), with its own stderr going to the job's log, so a job that crashes, is killed or leaks
memory takes nothing else down. The launcher itself only imports and forks (it never runs a
check, initialises CUDA or starts a thread), so every child starts from the same clean state.

Lifetime: the worker holds the launcher's stdin; when the worker dies (even ``kill -9``) the
launcher reads end-of-file, kills every running child's process group and exits, and each child
has ``PR_SET_PDEATHSIG = SIGKILL`` on the launcher, so a job never outlives its worker.

Protocol (JSON lines): the worker writes ``{"id", "argv", "cwd", "log"}`` (``argv`` is what
follows ``robustlab`` on a command line); the launcher answers ``{"ready": pid}`` once, then
``{"id", "pid"}`` when a job's child started and ``{"id", "rc"}`` when it ended (``rc`` < 0: killed
by that signal, as :attr:`subprocess.Popen.returncode`).
"""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import sys
from typing import Any

#: what a service job imports; a missing optional one is imported by the job itself, if needed
PRELOAD = ("torch", "robustlab.cli", "robustlab.commands.evaluate", "robustlab.pipelines.evaluate", "robustlab.checks",
           "robustlab.report", "robustlab.tracking.mlflow_log", "mlflow", "mlflow.store.tracking.sqlalchemy_store", "sklearn.datasets")


def preload() -> list[str]:
    """Import :data:`PRELOAD`; the names that could not be imported."""
    missing = []
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - an optional dependency: the job imports (or misses) it itself
            missing.append(name)
    try:  # the report template, compiled once here instead of in every job
        from robustlab.report.render import compile_template

        compile_template()
    except Exception:  # noqa: BLE001 - the job compiles it itself
        missing.append("report.html.j2")
    return missing


def _pdeathsig() -> None:
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def _child(req: dict[str, Any], launcher: int) -> int:  # pragma: no cover - runs in the forked child
    """Become the job: own session, stdio to the job's log, run the command line, return its exit code."""
    os.setsid()
    _pdeathsig()
    if os.getppid() != launcher:  # the launcher died between fork and prctl
        return 137
    devnull = os.open(os.devnull, os.O_RDWR)
    log = os.open(str(req["log"]), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)  # the launcher's protocol pipe is never written by a job
    os.dup2(log, 2)
    os.close(devnull)
    os.close(log)
    os.chdir(str(req["cwd"]))
    argv = [str(a) for a in req["argv"]]
    sys.argv = ["robustlab", *argv]
    rc = 0
    try:
        from robustlab.cli import main

        main(args=argv, prog_name="robustlab")
    except SystemExit as exc:
        code = exc.code
        rc = code if isinstance(code, int) else (0 if code is None else 1)
        if code is not None and not isinstance(code, int):
            sys.stderr.write(f"{code}\n")
    except BaseException:  # noqa: BLE001 - what an uncaught exception does to a fresh interpreter
        import traceback

        traceback.print_exc()
        rc = 1
    try:
        import atexit

        atexit._run_exitfuncs()  # what interpreter exit does (logging shutdown, MLflow run end)
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed stream at exit
                pass
    return rc


def _send(msg: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(msg) + "\n")
    sys.stdout.flush()


def serve() -> None:
    """The launcher's loop (``python -m robustlab.commands.launcher``)."""
    preload()
    me = os.getpid()
    running: dict[int, Any] = {}  # pid -> job id
    _send({"ready": me})
    stdin = sys.stdin.buffer
    buf = b""
    open_ = True
    while open_ or running:
        if open_:
            r, _w, _x = select.select([stdin.fileno()], [], [], 0.05)
            if r:
                chunk = os.read(stdin.fileno(), 65536)
                if not chunk:  # the worker is gone: its jobs go with it
                    open_ = False
                    for pid in list(running):
                        for kill in (os.killpg, os.kill):  # its group; itself if it has not made one yet
                            try:
                                kill(pid, signal.SIGKILL)
                            except (ProcessLookupError, PermissionError):
                                pass
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    req = json.loads(line)
                    sys.stdout.flush()
                    sys.stderr.flush()
                    pid = os.fork()
                    if pid == 0:  # pragma: no cover - the child
                        code = 1
                        try:
                            code = _child(req, me)
                        finally:
                            os._exit(code & 0xFF if code >= 0 else 1)
                    running[pid] = req["id"]
                    _send({"id": req["id"], "pid": pid})
        else:
            import time

            time.sleep(0.05)
        while running:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                running.clear()
                break
            if pid == 0:
                break
            job = running.pop(pid, None)
            if job is not None and open_:
                try:
                    _send({"id": job, "rc": os.waitstatus_to_exitcode(status)})
                except BrokenPipeError:
                    open_ = False


if __name__ == "__main__":  # pragma: no cover
    serve()
