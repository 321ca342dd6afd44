"""The service on a real PostgreSQL server (started on loopback in a temporary folder; skipped
when the binaries or the driver are missing): migrations, tokens, submission and the worker's
claim; a database outage answers 503 with a clear message and nothing is lost once it returns."""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("psycopg")


def _bin(name: str) -> str | None:
    for cand in (shutil.which(name), f"/usr/local/bin/{name}", *sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))):
        if cand and Path(cand).is_file():
            return str(cand)
    return None


class Postgres:
    def __init__(self, root: Path) -> None:
        self.initdb, self.pg_ctl = _bin("initdb"), _bin("pg_ctl")
        if not self.initdb or not self.pg_ctl:
            pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found")
        self.prefix: list[str] = []
        if os.geteuid() == 0:  # postgres refuses to run as root: run it as nobody
            if not shutil.which("runuser"):
                pytest.skip("running as root without runuser: cannot start PostgreSQL")
            self.prefix = ["runuser", "-u", "nobody", "--"]
            shutil.chown(root, "nobody")
        self.root = root
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        subprocess.run([*self.prefix, self.initdb, "-D", str(root / "data"), "-U", "rl", "--auth=trust", "-E", "UTF8"], check=True,
                       capture_output=True, timeout=120)
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://rl@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        subprocess.run([*self.prefix, str(self.pg_ctl), "-D", str(self.root / "data"), "-o", f"-p {self.port} -k {self.root} -h 127.0.0.1",
                        "-l", str(self.root / "log"), "-w", "start"], check=True, capture_output=True, timeout=60)

    def stop(self) -> None:
        subprocess.run([*self.prefix, str(self.pg_ctl), "-D", str(self.root / "data"), "-m", "fast", "-w", "stop"], capture_output=True, timeout=60)


@pytest.fixture()
def pg() -> Iterator[Postgres]:
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="robustlab-pg-"))  # under /tmp: reachable by the postgres user
    root.chmod(0o755)
    try:
        server = Postgres(root)
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_the_service_on_postgresql_and_through_an_outage(pg: Postgres, tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from robustlab.service.db import Database
    from robustlab.service.models import Base
    from robustlab.service.worker import Worker
    from service_helpers import make_service

    svc = make_service(tmp_path / "data", database_url=pg.url)
    with Database(pg.url).engine.connect() as c:
        assert compare_metadata(MigrationContext.configure(c), Base.metadata) == []
    c = svc.client
    r = c.post("/api/v1/projects/alpha/jobs", headers=svc.h("sub-a"), data={"model_name": "digits", "version": "1", "spec": "zoo:digits-cnn", "suite": "clean"},
               files={"policy": ("p.yaml", io.BytesIO(b"rules:\n  - metric: clean/accuracy\n    op: '>='\n    threshold: 0.5\n"))})
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    assert c.get(f"/api/v1/jobs/{job_id}", headers=svc.h("aud-b")).status_code == 404
    pg.stop()
    for resp in (c.get("/api/v1/projects/alpha/jobs", headers=svc.h("aud-a")),
                 c.post("/api/v1/projects/alpha/jobs", headers=svc.h("sub-a"), data={"model_name": "digits", "version": "2", "spec": "zoo:digits-cnn"}),
                 c.get("/readyz")):
        assert resp.status_code == 503, resp.text
        assert "unavailable" in resp.json()["detail"]
    pg.start()
    assert c.get("/readyz").status_code == 200
    jobs = c.get("/api/v1/projects/alpha/jobs", headers=svc.h("aud-a")).json()
    assert [j["id"] for j in jobs] == [job_id] and jobs[0]["state"] == "queued"  # nothing lost, nothing half-written
    w = Worker(svc.settings)
    assert w.claim() == job_id and w.claim() is None  # one conditional UPDATE: a job is claimed once
