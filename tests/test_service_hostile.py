"""The service against hostile or careless clients: a value JSON cannot carry, an admin token
filed under a project, unknown model/architecture/data names, pickled objects and broken
safetensors passed off as weights, and CLI clients given a bad URL, a bad token or another web
server (one ``error:`` line, exit 2)."""

from __future__ import annotations

import io
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import torch  # noqa: E402
from service_helpers import ENV, RL, Service, make_service  # noqa: E402

JSON = {"content-type": "application/json"}


@pytest.fixture()
def svc(tmp_path: Path) -> Service:
    return make_service(tmp_path / "data", max_upload_bytes=2_000_000)


def _submit(svc: Service, files: dict[str, tuple[str, bytes]] | None = None, **data: str) -> Any:
    form = {"model_name": "digits", "version": "1", "suite": "clean", **data}
    return svc.client.post("/api/v1/projects/alpha/jobs", headers=svc.h("sub-a"), data=form,
                           files={k: (n, io.BytesIO(b)) for k, (n, b) in (files or {}).items()})


def _torch_saved(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def test_a_number_json_cannot_carry_and_a_huge_field_get_a_short_422(svc: Service) -> None:
    r = svc.client.post("/api/v1/projects", headers={**svc.h("admin"), **JSON}, content=b'{"name": 1e99999}')
    assert r.status_code == 422, r.text  # was a 500: the validation answer echoed the input, infinity
    assert r.json()["detail"][0]["loc"] == ["body", "name"]
    r = svc.client.post("/api/v1/projects", headers={**svc.h("admin"), **JSON}, content=b'{"name": "' + b"a" * 500_000 + b'"}')
    assert r.status_code == 422 and len(r.content) < 2000, len(r.content)  # the refused input is not sent back


def test_an_admin_token_belongs_to_no_project(svc: Service) -> None:
    r = svc.client.post("/api/v1/tokens", headers=svc.h("admin"), json={"name": "x", "role": "admin", "project": "alpha"})
    assert r.status_code == 422, r.text
    assert "no project" in r.json()["detail"]


def test_unknown_zoo_model_architecture_or_data_set_is_refused_when_submitted(svc: Service) -> None:
    from safetensors.torch import save

    from robustlab.models.architectures import ARCHITECTURES

    weights = save({k: v.contiguous() for k, v in ARCHITECTURES["digits-cnn"]().state_dict().items()})
    for form, files, word in (({"spec": "zoo:digits-cn"}, None, "zoo:digits-cnn"),
                              ({"arch": "zoo-arch:nope"}, {"model": ("m.safetensors", weights)}, "zoo-arch:digits-cnn"),
                              ({"spec": "zoo:digits-cnn", "data": "digit"}, None, "digits"),
                              ({"arch": "torchvision:resnet181"}, {"model": ("m.safetensors", weights)}, "torchvision:resnet18"),
                              ({"arch": "timm:resnet1800"}, {"model": ("m.safetensors", weights)}, "list_models")):
        r = _submit(svc, files=files, **form)
        assert r.status_code == 400, (form, r.status_code, r.text)  # was 201: queued, to fail in the worker
        assert word in r.json()["detail"], r.text
    assert svc.client.get("/api/v1/projects/alpha/jobs", headers=svc.h("sub-a")).json() == []
    assert _submit(svc, spec="zoo:digits-cnn", data="digits").status_code == 201


class _Evil:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("echo pwned",))


def test_a_pickled_object_in_a_state_dict_archive_is_refused(svc: Service) -> None:
    from robustlab.models.architectures import ARCHITECTURES

    for obj in (_Evil(), torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))):
        r = _submit(svc, files={"model": ("m.pt", _torch_saved(obj))}, arch="zoo-arch:digits-cnn")
        assert r.status_code == 415, r.text  # was 201: a torch.save'd object passed for a weights-only state dict
        assert "pickle names" in r.json()["detail"]
    assert not list(svc.settings.artifact_dir.rglob("*.pt"))
    r = _submit(svc, files={"model": ("m.pt", _torch_saved(ARCHITECTURES["digits-cnn"]().state_dict()))}, arch="zoo-arch:digits-cnn")
    assert r.status_code == 201, r.text  # a real state dict still is accepted


def test_a_safetensors_file_that_describes_no_tensors_is_refused(svc: Service) -> None:
    for blob in ((7).to_bytes(8, "little") + b'{"a":1}', (2).to_bytes(8, "little") + b"{}",
                 (60).to_bytes(8, "little") + b'{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}'.ljust(60) + b"\0" * 4):
        r = _submit(svc, files={"model": ("m.safetensors", blob)}, arch="zoo-arch:digits-cnn")
        assert r.status_code == 415, (blob, r.text)  # was 201
        assert "safetensors" in r.json()["detail"]


class _NotRobustlab(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(b"<html>another web server</html>")

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture()
def other_server() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _NotRobustlab)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()


def test_cli_clients_given_a_bad_url_a_bad_token_or_another_server_say_so_in_one_line(other_server: str, tmp_path: Path) -> None:
    card = tmp_path / "card.json"
    card.write_text("{}")
    env = {k: v for k, v in ENV.items() if k not in ("ROBUSTLAB_SERVER", "ROBUSTLAB_TOKEN")}
    for args, word in ((["submit", "--server", "http://[::1", "--token", "rl_x", "--model", "zoo:digits-cnn"], "--server"),
                       (["submit", "--server", other_server, "--token", "rl_\u00e4", "--model", "zoo:digits-cnn"], "--token"),
                       (["admin", "--server", other_server, "--token", "rl_a\nb", "project", "p"], "--token"),
                       (["push", str(card), "--server", other_server, "--token", "rl_x"], "--server")):
        r = subprocess.run([*RL, *args], capture_output=True, text=True, env=env, timeout=120)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:") and word in lines[0], (args, r.returncode, r.stderr)


def test_a_pushed_scorecard_with_no_checks_or_contradictory_numbers_is_refused(svc: Service) -> None:
    import json

    golden = json.loads((Path(__file__).parent / "golden" / "quick.json").read_text())
    golden.pop("signature", None)

    def push(card: dict[str, Any]) -> Any:
        return svc.client.post("/api/v1/projects/alpha/scorecards", headers=svc.h("sub-a"),
                               files={"scorecard": ("scorecard.json", json.dumps(card).encode())})

    assert push(golden).status_code == 201
    for card, word in (({}, "no checks"), ({**golden, "checks": []}, "no checks")):
        r = push(card)
        assert r.status_code == 400, r.text  # was 201: stored for auditors to browse
        assert word in r.json()["detail"], r.text
    edited = json.loads(json.dumps(golden))
    check = next(c for c in edited["checks"] if c.get("intervals"))
    key = next(iter(check["intervals"]))
    check["metrics"][key] = 1.0 if check["intervals"][key]["high"] < 1.0 else 0.0  # outside its own interval
    r = push(edited)
    assert r.status_code == 400 and "interval" in r.json()["detail"], r.text
    assert len(svc.client.get("/api/v1/projects/alpha/scorecards", headers=svc.h("aud-a")).json()) == 1


def test_a_bad_policy_upload_is_named_once(svc: Service) -> None:
    """The refusal read 'policy: policy file the policy file is not valid YAML' and 'policy: policy: unknown key(s)'."""
    for body in (b"rules: [\n", b"version: 1\nrulez: []\n"):
        r = _submit(svc, files={"policy": ("gate.yaml", body)}, spec="zoo:digits-cnn")
        assert r.status_code == 400, r.text
        detail = r.json()["detail"]
        assert "policy" in detail and "policy: policy" not in detail and "policy file the" not in detail, detail
