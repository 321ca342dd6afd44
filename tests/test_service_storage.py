"""Service storage and auth plumbing: Alembic migrations match the ORM, tokens are stored hashed,
roles and projects are enforced on the API."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from fastapi.testclient import TestClient  # noqa: E402
from sqlalchemy import select  # noqa: E402

from robustlab.service.app import create_app  # noqa: E402
from robustlab.service.auth import create_token, hash_token  # noqa: E402
from robustlab.service.db import Database, current_revision, migrate, HEAD  # noqa: E402
from robustlab.service.models import Base, Project, Role, Token  # noqa: E402
from robustlab.service.settings import Settings  # noqa: E402


def test_migrations_build_exactly_the_orm_schema(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    db = Database(f"sqlite:///{tmp_path / 'x.db'}")
    migrate(db.engine)
    migrate(db.engine)  # idempotent
    assert current_revision(db.engine) == HEAD
    with db.engine.connect() as c:
        assert compare_metadata(MigrationContext.configure(c), Base.metadata) == []


def test_default_database_is_sqlite_under_the_data_folder(tmp_path: Path) -> None:
    st = Settings(data_dir=tmp_path / "data")
    create_app(st)
    assert (tmp_path / "data" / "robustlab.db").is_file()
    assert st.key_path.is_file()


def _seed(st: Settings) -> dict[str, str]:
    db = Database(st.database_url)
    with db.session() as s:
        a, b = Project(name="alpha"), Project(name="beta")
        s.add_all([a, b])
        s.flush()
        out = {}
        for name, role, proj in (("admin", Role.ADMIN, None), ("sub-a", Role.SUBMITTER, a), ("aud-a", Role.AUDITOR, a), ("aud-b", Role.AUDITOR, b)):
            _row, out[name] = create_token(s, name=name, role=role, project=proj)
    return out


@pytest.fixture()
def client_tokens(tmp_path: Path) -> tuple[TestClient, dict[str, str], Settings]:
    st = Settings(data_dir=tmp_path / "data")
    app = create_app(st)
    return TestClient(app), _seed(st), st


def _h(t: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {t}"}


def test_tokens_are_stored_hashed_never_in_clear(client_tokens: tuple[TestClient, dict[str, str], Settings]) -> None:
    _c, tokens, st = client_tokens
    raw = (st.data_dir / "robustlab.db").read_bytes()
    for value in tokens.values():
        assert value.encode() not in raw
    with Database(st.database_url).session() as s:
        hashes = set(s.scalars(select(Token.token_hash)))
    assert {hash_token(v) for v in tokens.values()} == hashes


def test_every_api_call_needs_a_valid_token(client_tokens: tuple[TestClient, dict[str, str], Settings]) -> None:
    c, tokens, _st = client_tokens
    assert c.get("/api/v1/projects").status_code == 401
    assert c.get("/api/v1/projects", headers=_h("rl_" + "x" * 43)).status_code == 401
    assert c.get("/api/v1/projects", headers={"Authorization": tokens["admin"]}).status_code == 401  # no Bearer
    assert c.get("/api/v1/whoami", headers=_h(tokens["aud-a"])).json() == {"name": "aud-a", "role": "auditor", "project": "alpha"}


def test_roles_and_projects_are_enforced(client_tokens: tuple[TestClient, dict[str, str], Settings]) -> None:
    c, tokens, _st = client_tokens
    # project listing is scoped
    assert [p["name"] for p in c.get("/api/v1/projects", headers=_h(tokens["aud-b"])).json()] == ["beta"]
    assert [p["name"] for p in c.get("/api/v1/projects", headers=_h(tokens["admin"])).json()] == ["alpha", "beta"]
    # admin-only actions
    for who in ("sub-a", "aud-a"):
        assert c.post("/api/v1/projects", json={"name": "gamma"}, headers=_h(tokens[who])).status_code == 403
        assert c.post("/api/v1/tokens", json={"name": "x", "role": "admin"}, headers=_h(tokens[who])).status_code == 403
        assert c.get("/api/v1/tokens", headers=_h(tokens[who])).status_code == 403
    assert c.post("/api/v1/projects", json={"name": "gamma"}, headers=_h(tokens["admin"])).status_code == 201
    assert c.post("/api/v1/projects", json={"name": "../etc"}, headers=_h(tokens["admin"])).status_code == 422


def test_a_revoked_token_stops_working(client_tokens: tuple[TestClient, dict[str, str], Settings]) -> None:
    c, tokens, _st = client_tokens
    r = c.post("/api/v1/tokens", json={"name": "tmp", "role": "auditor", "project": "alpha"}, headers=_h(tokens["admin"]))
    assert r.status_code == 201, r.text
    new = r.json()
    assert c.get("/api/v1/whoami", headers=_h(new["token"])).status_code == 200
    assert c.delete(f"/api/v1/tokens/{new['id']}", headers=_h(tokens["admin"])).status_code == 204
    assert c.get("/api/v1/whoami", headers=_h(new["token"])).status_code == 401
    listed = c.get("/api/v1/tokens", headers=_h(tokens["admin"])).json()
    assert all(t["token"] is None for t in listed)


def test_openapi_health_and_readiness(client_tokens: tuple[TestClient, dict[str, str], Settings]) -> None:
    c, _tokens, _st = client_tokens
    schema = c.get("/api/v1/openapi.json").json()
    assert "/api/v1/projects" in schema["paths"]
    assert c.get("/healthz").json() == {"status": "ok"}
    assert c.get("/readyz").json()["status"] == "ready"
    assert "robustlab_queue_depth 0" in c.get("/metrics").text


def test_ui_sign_in_needs_csrf_and_gives_a_session(client_tokens: tuple[TestClient, dict[str, str], Settings]) -> None:
    c, tokens, _st = client_tokens
    assert c.post("/signin", data={"token": tokens["aud-a"], "csrf": "forged"}).status_code == 403
    form = c.get("/signin")
    csrf = form.cookies.get("rl_csrf")
    r = c.post("/signin", data={"token": tokens["aud-a"], "csrf": csrf}, follow_redirects=False)
    assert r.status_code == 303 and "rl_session" in r.cookies
    assert c.get("/api/v1/whoami").json()["name"] == "aud-a"  # GET through the session cookie
    assert c.post("/api/v1/projects", json={"name": "x"}).status_code == 401  # a cookie never authorises a write
    assert c.post("/signout", data={"csrf": "wrong"}).status_code == 403


def test_pages_are_self_contained_no_cdn(client_tokens: tuple[TestClient, dict[str, str], Settings]) -> None:
    import re

    c, _tokens, _st = client_tokens
    assert c.get("/api/v1/docs").status_code == 404  # FastAPI's interactive docs load scripts and fonts from a CDN
    for page in ("/", "/signin"):
        html = c.get(page).text
        assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), page
