"""Run one job: the exact ``robustlab evaluate`` command line in its own process (``torchrun``
when the job asks for several GPUs), then sign, verify, gate and store what it wrote.

The child runs with ``PR_SET_PDEATHSIG = SIGKILL`` (Linux), so a worker killed with ``kill -9``
takes its run down with it; the job's folder (``DATA/jobs/<id>/out``) keeps the batch results
already stored, and the next attempt passes ``--resume`` so the scorecard is that of an
uninterrupted run. Nothing here computes a metric or a gate rule: evaluate, the gate pipeline,
the signer and the report renderer do.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .artifacts import path_of
from .models import Job, Version
from .settings import Settings

log = logging.getLogger(__name__)
STEP_RE = re.compile(r"^\[(\d+)/(\d+)\] (.{1,200})")
#: the run's progress line inside a check (``robustlab.progress_lines.make_progress`` off a terminal)
DETAIL_RE = re.compile(r"^progress: (.{1,200})")
MLFLOW_RE = re.compile(r"MLflow run ([0-9a-f]{32}) logged")
#: evaluate's exit codes that end a job (the gate's 0/1/3, and 2 for an input error a retry cannot fix)
FINAL_CODES = (0, 1, 2, 3)


@dataclass
class Progress:
    """What the child's stderr has told so far (filled by a reader thread)."""

    fraction: float = 0.0
    message: str = "starting"
    step: str = ""  # "check i/n: id (kind) ...", the part of ``message`` a progress line extends
    mlflow_run_id: str | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=40))


class JobProcess(Protocol):
    """What the worker needs of a run's process: a cold :class:`subprocess.Popen` or a warm run."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...


def wait_for(proc: JobProcess, seconds: float) -> int | None:
    """Wait up to ``seconds`` for ``proc`` to end; its return code, or ``None`` while it runs."""
    try:
        return proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return None


def job_out(settings: Settings, job: Job) -> Path:
    return settings.jobs_dir / job.id / "out"


def command_for(settings: Settings, job: Job, ver: Version, *, baseline_path: Path | None, device: str, resume: bool,
                trusted_dir: Path | None = None) -> list[str]:
    """The ``robustlab evaluate`` argv of ``job`` (every value comes from the database, checked at
    submission; paths are built from ids). ``trusted_dir`` holds the trust store's public keys, for a
    policy that requires the baseline signed by a trusted key."""
    opts: dict[str, Any] = dict(job.options or {})
    if ver.artifact_key:
        model = ["--model", f"state-dict:{path_of(settings.artifact_dir, ver.artifact_key)}", "--arch", str(ver.arch)]
    else:
        model = ["--model", str(ver.spec)]
    gpus = int(opts.get("gpus") or 0)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}", "-m", "robustlab"] if gpus > 1 else [sys.executable, "-m", "robustlab"]
    argv = [*launcher, "-v", "evaluate", *model, "--suite", settings.suite_arg(job.suite), "--out", str(job_out(settings, job)),
            "--seed", str(int(opts.get("seed") or 0)), "--batch-size", str(int(opts.get("batch_size") or 128)),
            "--mlflow-uri", settings.mlflow_uri, "--device", "cuda" if gpus > 1 else device]
    if opts.get("limit"):
        argv += ["--limit", str(int(opts["limit"]))]
    if opts.get("data"):
        argv += ["--data", str(opts["data"])]
    if job.policy_key:
        argv += ["--policy", str(path_of(settings.artifact_dir, job.policy_key))]
        if baseline_path is not None:
            argv += ["--baseline", str(baseline_path)]
            if trusted_dir is not None:
                argv += ["--trusted-keys", str(trusted_dir)]
    if resume:
        argv.append("--resume")
    return argv


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass
    os.setsid()


def job_env() -> dict[str, str]:
    """The environment of a job's process: unbuffered stderr (progress), no progress bars but a
    progress line every 15 s inside a check, the service's MLflow experiment."""
    from ..tracking.mlflow_log import DEFAULT_EXPERIMENT

    return {"ROBUSTLAB_PROGRESS_SECONDS": "15", **os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1", "MLFLOW_EXPERIMENT_NAME": DEFAULT_EXPERIMENT}


def consume_line(prog: Progress, raw: bytes) -> None:
    """Take one stderr line of a run into ``prog`` (step, MLflow run id, the tail for errors)."""
    line = raw.decode("utf-8", "replace").rstrip()
    prog.tail.append(line)
    m = STEP_RE.match(line)
    if m:
        i, n = int(m.group(1)), int(m.group(2))
        prog.fraction = max(0.0, min(1.0, (i - 1) / max(n, 1)))
        prog.message = prog.step = f"check {i}/{n}: {m.group(3)}"
    d = DETAIL_RE.match(line)
    if d:  # within a long check: where it is and how long is left
        prog.message = f"{prog.step}; {d.group(1)}" if prog.step else d.group(1)
    m2 = MLFLOW_RE.search(line)
    if m2:
        prog.mlflow_run_id = m2.group(1)


def start(argv: list[str], log_path: Path) -> tuple[subprocess.Popen[bytes], Progress, threading.Thread]:
    """Start the child; a thread reads its stderr into a :class:`Progress` and ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # cwd: the job's own folder, so nothing the run writes relative to it lands in the worker's folder
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=job_env(), cwd=log_path.parent,
                            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)
    prog = Progress()

    def read() -> None:
        assert proc.stderr is not None
        with open(log_path, "ab") as logf:
            for raw in proc.stderr:
                logf.write(raw)
                logf.flush()
                consume_line(prog, raw)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    return proc, prog, t


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill the child's whole process group (torchrun ranks included)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def last_error(prog: Progress, settings: Settings | None = None) -> str:
    """The child's last error line, with the server's data folder shown as ``DATA``."""
    found = next((ln for ln in reversed(prog.tail) if ln.startswith(("error:", "internal error:"))), prog.tail[-1] if prog.tail else "no output")
    if settings is not None:
        found = found.replace(str(settings.data_dir), "DATA")
    return found[:500]


def environment_json(card: dict[str, Any], path: Path) -> Path:
    env = {"environment": card.get("environment"), "tool": card.get("tool"), "run": card.get("run")}
    path.write_text(json.dumps(env, indent=1, sort_keys=True, default=str), encoding="utf-8")
    return path


def write_trusted_keys(keys: "list[bytes]", folder: Path) -> Path:
    """The raw Ed25519 public ``keys`` as ``<key id>.pem`` files in ``folder`` (emptied first), so a job's
    ``robustlab evaluate`` trusts what the service's trust store trusts."""
    import shutil

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from ..signing import key_id

    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for raw in keys:
        pem = Ed25519PublicKey.from_public_bytes(raw).public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        (folder / f"{key_id(raw)}.pem").write_bytes(pem)
    return folder
