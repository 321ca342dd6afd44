"""Helpers of the UI tests: a real ``robustlab serve`` on loopback, signed-in HTTP clients, and
finished evaluations recorded through the service's own finalize step (signed by the server's key)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from robustlab.scorecard import Scorecard


@dataclass
class Server:
    url: str
    data_dir: Path
    admin: str
    proc: subprocess.Popen[str]

    def api(self, method: str, path: str, token: str | None = None, **kw: Any) -> httpx.Response:
        h = {"Authorization": f"Bearer {token or self.admin}"}
        return httpx.request(method, self.url + path, headers=h, timeout=30, **kw)

    def token(self, name: str, role: str, project: str | None) -> str:
        r = self.api("POST", "/api/v1/tokens", json={"name": name, "role": role, "project": project})
        assert r.status_code == 201, r.text
        return str(r.json()["token"])

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_server(data_dir: Path, *, workers: int = 0) -> Server:
    """``robustlab serve --port 0`` in its own process; its URL and first admin token from stdout."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "robustlab", "serve", "--data-dir", str(data_dir), "--port", "0", "--workers", str(workers),
                             "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    url = token = None
    deadline = time.monotonic() + 60
    assert proc.stdout is not None
    while time.monotonic() < deadline and (url is None or token is None):
        line = proc.stdout.readline()
        if not line:
            break
        if m := re.search(r"robustlab service at (http://\S+)", line):
            url = m.group(1)
        if m := re.search(r"admin token: (rl_\S+)", line):
            token = m.group(1)
    if url is None or token is None:
        proc.kill()
        raise RuntimeError("robustlab serve did not print its URL and admin token")
    for _ in range(100):
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    return Server(url, data_dir.resolve(), token, proc)


def signed_in(server: Server, token: str) -> httpx.Client:
    """A client with a UI session for ``token`` (through the sign-in form and its CSRF cookie)."""
    c = httpx.Client(base_url=server.url, timeout=30)
    form = c.get("/signin")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf, form.text
    r = c.post("/signin", data={"token": token, "csrf": csrf.group(1)})
    assert r.status_code == 303 and "rl_session" in c.cookies, r.text
    return c


def csrf_of(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]*)"', html)
    assert m, html[:2000]
    return m.group(1)


def record_evaluation(data_dir: Path, work: Path, *, project: str, model: str, version: str, card: Scorecard,
                      policy: bytes | None = None, suite: str = "standard") -> tuple[str, int]:
    """A finished job of ``card`` as the service records one (finalize: signed with the service
    key, verified, gated, report rendered, evidence stored). Returns (job id, scorecard id)."""
    from sqlalchemy import select

    from robustlab.service.artifacts import store_file
    from robustlab.service.db import Database
    from robustlab.service.finalize import finalize
    from robustlab.service.jobs_api import model_version
    from robustlab.service.models import Job, JobState, Project, Version, utcnow
    from robustlab.service.settings import Settings

    st = Settings(data_dir=data_dir)
    job_id = uuid.uuid4().hex
    out = work / job_id
    out.mkdir(parents=True)
    card.write(out / "scorecard.json")
    with Database(st.database_url).session() as s:
        proj = s.scalar(select(Project).where(Project.name == project))
        assert proj is not None
        mdl, ver = model_version(s, proj, model, version, create=True)
        if ver is None:
            ver = Version(model_id=mdl.id, version=version, spec=str(card.model.get("spec"))[:200])
            s.add(ver)
            s.flush()
        now = utcnow()
        job = Job(id=job_id, project_id=proj.id, version_id=ver.id, suite=suite, state=JobState.SUCCEEDED, attempts=1, progress=1.0,
                  message="done", options={}, created_at=now, started_at=now, finished_at=now)
        s.add(job)
        s.flush()
        if policy is not None:
            (out / "policy.yaml").write_bytes(policy)
            store_file(s, st.artifact_dir, out / "policy.yaml", f"jobs/{job_id}/policy.yaml", kind="policy", project_id=proj.id, job_id=job_id)
            job.policy_key = f"jobs/{job_id}/policy.yaml"
        stored = finalize(s, st, job, out, exit_code=0, baseline_path=None)
        job.exit_code = stored.gate_exit_code
        return job_id, stored.id
