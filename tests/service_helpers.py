"""Helpers of the service tests: an app on a temporary data folder with seeded projects and tokens."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi.testclient import TestClient

from robustlab.service.app import create_app
from robustlab.service.auth import create_token
from robustlab.service.db import Database
from robustlab.service.models import Project, Role
from robustlab.service.settings import Settings

TEST_SUITES = Path(__file__).parent / "suites"
RL = [sys.executable, "-m", "robustlab"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@dataclass
class Service:
    client: TestClient
    settings: Settings
    tokens: dict[str, str]

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}


def seed(st: Settings) -> dict[str, str]:
    with Database(st.database_url).session() as s:
        a, b = Project(name="alpha"), Project(name="beta")
        s.add_all([a, b])
        s.flush()
        out = {}
        for name, role, proj in (("admin", Role.ADMIN, None), ("sub-a", Role.SUBMITTER, a), ("aud-a", Role.AUDITOR, a),
                                 ("sub-b", Role.SUBMITTER, b), ("aud-b", Role.AUDITOR, b)):
            _row, out[name] = create_token(s, name=name, role=role, project=proj)
    return out


def make_service(data_dir: Path, **kw: object) -> Service:
    st = Settings(data_dir=data_dir, suite_dir=TEST_SUITES, **kw)  # type: ignore[arg-type]
    client = TestClient(create_app(st))
    return Service(client, st, seed(st))


class Server:
    """``robustlab serve`` in a subprocess on a free loopback port."""

    def __init__(self, data: Path, *extra: str) -> None:
        self.proc = subprocess.Popen([*RL, "serve", "--data-dir", str(data), "--port", "0", *extra], env=ENV, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, start_new_session=True)
        assert self.proc.stdout is not None
        lines = [self.proc.stdout.readline() for _ in range(2)]
        m = re.search(r"http://[0-9.]+:\d+", lines[0])
        assert m, lines
        self.url = m.group(0)
        t = re.search(r"rl_[A-Za-z0-9_-]+", lines[1])
        self.admin = t.group(0) if t else None
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/readyz").status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError("server did not become ready")

    def api(self, token: str) -> Any:
        return httpx.Client(base_url=self.url + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def stop(self) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(timeout=30)
