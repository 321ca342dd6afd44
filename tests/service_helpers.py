"""Helpers of the service tests: an app on a temporary data folder with seeded projects and tokens."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from fastapi.testclient import TestClient

from robustlab.service.app import create_app
from robustlab.service.auth import create_token
from robustlab.service.db import Database
from robustlab.service.models import Project, Role
from robustlab.service.settings import Settings

TEST_SUITES = Path(__file__).parent / "suites"


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
