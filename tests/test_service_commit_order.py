"""Every API write is committed before its answer leaves the server.

FastAPI ends a ``yield`` dependency *after* the response is sent unless it is declared with
``scope="function"``: a client that revoked a token, or created a project, and at once asked again
could still see the old state (the revoked token kept working for a moment). The ASGI app is called
directly so the order of "database commit" and "response sent" is observed, not raced.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

pytest.importorskip("fastapi")

from sqlalchemy.orm import Session  # noqa: E402

from service_helpers import make_service  # noqa: E402


def _call(app, events: list[object], method: str, path: str, token: str, body: dict | None = None) -> None:  # noqa: ANN001
    """Call the ASGI app once; "response sent" is appended to ``events`` when the last body part goes out."""
    payload = json.dumps(body).encode() if body is not None else b""
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"authorization", f"Bearer {token}".encode()), (b"content-type", b"application/json"), (b"host", b"test")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}

    async def run() -> None:
        delivered = False

        async def receive() -> dict[str, object]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": payload, "more_body": False}
            await asyncio.sleep(3600)
            return {"type": "http.disconnect"}

        async def send(message: dict[str, object]) -> None:
            if message["type"] == "http.response.start":
                events.append(("status", message["status"]))
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                events.append("response sent")

        await app(scope, receive, send)

    asyncio.run(run())


def test_api_writes_are_committed_before_the_answer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    svc = make_service(tmp_path / "data")
    tokens = svc.client.get("/api/v1/tokens", headers=svc.h("admin")).json()
    victim = next(t for t in (tokens if isinstance(tokens, list) else tokens["tokens"]) if t["name"] == "aud-b")
    events: list[object] = []
    real_commit = Session.commit

    def commit(self: Session) -> None:
        real_commit(self)
        events.append("commit")

    monkeypatch.setattr(Session, "commit", commit)
    for method, path, body, status in (("POST", "/api/v1/projects", {"name": "gamma"}, 201),
                                       ("DELETE", f"/api/v1/tokens/{victim['id']}", None, 204)):
        events.clear()
        _call(svc.client.app, events, method, path, svc.tokens["admin"], body)
        assert ("status", status) in events and "commit" in events, events
        assert "commit" not in events[events.index("response sent"):], f"{method} {path}: a commit after the answer: {events}"
