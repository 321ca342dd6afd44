"""A submission writes nothing unless it is accepted, a version made by ``push`` can be evaluated by
submitting its model, and the service's answers, pages and signed scorecards show neither its paths
nor the tracking server's credentials; a trust store change re-verifies the stored scorecards."""

from __future__ import annotations

import hashlib
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import robustlab  # noqa: E402
from service_helpers import Service, make_service  # noqa: E402

GOLDEN = Path(__file__).parent / "golden" / "quick.json"
DIGITS = Path(robustlab.__file__).parent / "models" / "zoo" / "digits-cnn.safetensors"
DIGITS_SHA = hashlib.sha256(DIGITS.read_bytes()).hexdigest()


@pytest.fixture()
def svc(tmp_path: Path) -> Service:
    return make_service(tmp_path / "data", max_upload_bytes=2_000_000)


def _card() -> dict[str, Any]:
    card: dict[str, Any] = json.loads(GOLDEN.read_text())
    card.pop("signature", None)
    card["model"].update(spec="zoo:digits-cnn", architecture="zoo-arch:digits-cnn", sha256=DIGITS_SHA)
    return card


def _post(svc: Service, form: dict[str, str], **files: tuple[str, bytes]) -> Any:
    return svc.client.post("/api/v1/projects/alpha/jobs", headers=svc.h("sub-a"), data={"suite": "clean", **form},
                           files={k: (n, io.BytesIO(b)) for k, (n, b) in files.items()} or None)


def _models(svc: Service) -> dict[str, list[str]]:
    return {m["name"]: [v["version"] for v in m["versions"]] for m in svc.client.get("/api/v1/projects/alpha/models", headers=svc.h("aud-a")).json()}


def _stored_files(svc: Service) -> list[Path]:
    return [f for f in svc.settings.artifact_dir.rglob("*") if f.is_file()]


def test_a_version_made_by_push_is_evaluated_by_submitting_its_model(svc: Service) -> None:
    """Before: 409 'exists with another model' for the very same weights file or zoo model."""
    assert svc.client.post("/api/v1/projects/alpha/scorecards", headers=svc.h("sub-a"), data={"model_name": "pushed", "version": "pv"},
                           files={"scorecard": ("s.json", json.dumps(_card()).encode())}).status_code == 201
    assert svc.client.post("/api/v1/projects/alpha/scorecards", headers=svc.h("sub-a"), data={"model_name": "pushed", "version": "pz"},
                           files={"scorecard": ("s.json", json.dumps(_card()).encode())}).status_code == 201
    # another model's weights: refused, naming the pushed model's sha256
    other = bytearray(DIGITS.read_bytes())
    other[-1] ^= 1
    r = _post(svc, {"model_name": "pushed", "version": "pv", "arch": "zoo-arch:digits-cnn"}, model=("m.safetensors", bytes(other)))
    assert r.status_code == 409 and DIGITS_SHA[:12] in r.json()["detail"] and "pushed scorecard" in r.json()["detail"], r.text
    # the same weights file: accepted, and the version can now run
    r = _post(svc, {"model_name": "pushed", "version": "pv", "arch": "zoo-arch:digits-cnn"}, model=("m.safetensors", DIGITS.read_bytes()))
    assert r.status_code == 201, r.text
    # the zoo model with the same weights
    r = _post(svc, {"model_name": "pushed", "version": "pz", "spec": "zoo:digits-cnn"})
    assert r.status_code == 201, r.text
    from robustlab.service.db import Database
    from robustlab.service.models import Version

    with Database(svc.settings.database_url).session() as s:
        pv = s.query(Version).filter_by(version="pv").one()
        pz = s.query(Version).filter_by(version="pz").one()
        assert pv.artifact_key and pv.arch == "zoo-arch:digits-cnn" and pv.sha256 == DIGITS_SHA
        assert pz.spec == "zoo:digits-cnn" and pz.artifact_key is None
    # once runnable, the version is immutable as before
    assert _post(svc, {"model_name": "pushed", "version": "pz", "spec": "zoo:cifar10-resnet18"}).status_code == 409
    assert _post(svc, {"model_name": "pushed", "version": "pv", "arch": "zoo-arch:digits-cnn"}, model=("m.safetensors", bytes(other))).status_code == 409


def test_a_refused_submission_leaves_no_model_behind(svc: Service) -> None:
    """Before: a 415 upload or a 400 baseline left an empty model in the project."""
    assert _post(svc, {"model_name": "orphan", "version": "1", "arch": "zoo-arch:digits-cnn"}, model=("m.bin", b"not a model at all")).status_code == 415
    assert _post(svc, {"model_name": "orphan2", "version": "1", "spec": "zoo:digits-cnn", "baseline": "nope"}).status_code == 400
    assert _post(svc, {"model_name": "orphan3", "version": "1", "spec": "zoo:digits-cnn"}, policy=("p.yaml", b"rules: [1, 2")).status_code == 400
    assert _models(svc) == {}
    assert not _stored_files(svc) and not list((svc.settings.data_dir / "tmp").glob("upload-*"))


def test_a_bad_policy_is_refused_without_naming_a_server_file(svc: Service) -> None:
    r = _post(svc, {"model_name": "d", "version": "1", "spec": "zoo:digits-cnn"}, policy=("p.yaml", b"rules: [1, 2"))
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert "policy" in detail and "the policy file" in detail, detail
    assert str(svc.settings.data_dir) not in detail and "upload-" not in detail and "/tmp" not in detail, detail


@pytest.mark.timeout(120)
def test_a_submission_refused_by_a_broker_that_is_down_leaves_nothing(tmp_path: Path) -> None:
    """Before: 503 'nothing was queued', yet the model, the version and its weights file stayed, and
    resubmitting the corrected file under that version got 409 'versions are immutable'."""
    svc = make_service(tmp_path / "data", max_upload_bytes=2_000_000, queue_url="redis://127.0.0.1:1/0")
    form = {"model_name": "q", "version": "1", "arch": "zoo-arch:digits-cnn"}
    r = _post(svc, form, model=("m.safetensors", DIGITS.read_bytes()), policy=("p.yaml", b"rules: []\n"))
    assert r.status_code == 503, r.text
    assert _models(svc) == {}
    assert not _stored_files(svc), _stored_files(svc)
    assert not [p for p in (svc.settings.data_dir / "jobs").rglob("*") if p.is_file()] if (svc.settings.data_dir / "jobs").exists() else True
    assert _post(svc, form, model=("m.safetensors", DIGITS.read_bytes())).status_code == 503  # not 409: nothing of the first stayed


def test_out_of_range_numbers_are_refused_not_a_server_error(svc: Service) -> None:
    huge = "99999999999999999999"
    for method, url in (("GET", f"/api/v1/scorecards/{huge}"), ("GET", f"/api/v1/projects/alpha/jobs?offset={huge}"),
                        ("DELETE", f"/api/v1/tokens/{huge}")):
        r = svc.client.request(method, url, headers=svc.h("admin"))
        assert r.status_code == 422 and "out of range" in r.json()["detail"], (url, r.status_code, r.text)


def test_removing_or_adding_a_trusted_key_re_verifies_its_scorecards(svc: Service, tmp_path: Path) -> None:
    """Before: after DELETE /trusted-keys/{kid} the API and the pages still said valid-trusted."""
    from robustlab.signing import generate_key, sign_scorecard

    key, pub = generate_key(tmp_path / "team.pem")
    path = tmp_path / "card.json"
    path.write_text(json.dumps(_card()))
    sign_scorecard(path, key)
    r = svc.client.post("/api/v1/projects/alpha/scorecards", headers=svc.h("sub-a"), files={"scorecard": ("s.json", path.read_bytes())})
    assert r.status_code == 201 and r.json()["signature_state"] == "valid-untrusted", r.text
    cid = r.json()["id"]

    def state() -> str:
        out: str = svc.client.get(f"/api/v1/scorecards/{cid}", headers=svc.h("aud-a")).json()["signature_state"]
        return out

    added = svc.client.post("/api/v1/trusted-keys", headers=svc.h("admin"), json={"name": "team", "public_key_pem": pub.read_text()})
    assert added.status_code == 201
    assert state() == "valid-trusted"
    assert svc.client.delete(f"/api/v1/trusted-keys/{added.json()['key_id']}", headers=svc.h("admin")).status_code == 204
    assert state() == "valid-untrusted"


def test_a_job_scorecard_names_no_server_path_and_no_url_password(svc: Service, tmp_path: Path) -> None:
    """Before: an auditor read the MLflow password and the absolute job folder from the signed card's run.command."""
    from robustlab.service.finalize import public_scorecard

    data = str(svc.settings.data_dir)
    card = _card()
    card["run"]["command"] = f"robustlab -v evaluate --model state-dict:{data}/artifacts/p1/v1/model.safetensors --out {data}/jobs/abc/out " \
                             "--mlflow-uri http://svc:S3cretPW@127.0.0.1:9"
    card["model"]["spec"] = f"state-dict:{data}/artifacts/p1/v1/model.safetensors"
    path = tmp_path / "scorecard.json"
    path.write_text(json.dumps(card))
    public_scorecard(path, svc.settings)
    text = path.read_text()
    assert data not in text and "S3cretPW" not in text
    out = json.loads(text)
    assert out["run"]["command"].endswith("--mlflow-uri http://svc:***@127.0.0.1:9") and "DATA/jobs/abc/out" in out["run"]["command"]
    assert out["model"]["spec"] == "state-dict:DATA/artifacts/p1/v1/model.safetensors"
    assert {k: v for k, v in out.items() if k not in ("run", "model")} == {k: v for k, v in card.items() if k not in ("run", "model")}


def test_the_recorded_command_line_hides_url_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    from robustlab.commands.common import command_line

    monkeypatch.setattr(sys, "argv", ["robustlab", "evaluate", "--mlflow-uri", "postgresql://u:p%40ss@db:5432/ml", "--model", "zoo:digits-cnn"])
    assert command_line() == "robustlab evaluate --mlflow-uri postgresql://u:***@db:5432/ml --model zoo:digits-cnn"


def test_a_cancel_that_lands_after_the_result_was_stored_does_not_overwrite_it(svc: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: cancel read the job as running, the worker then stored 'succeeded', and the cancel's
    unconditional write turned it into 'cancelled' while its scorecard stayed."""
    import robustlab.service.jobs_api as jobs_api
    from robustlab.service.db import Database
    from robustlab.service.models import Job, JobState

    jid = _post(svc, {"model_name": "d", "version": "1", "spec": "zoo:digits-cnn"}).json()["id"]
    with Database(svc.settings.database_url).session() as s:
        job = s.get(Job, jid)
        assert job is not None
        job.state, job.worker, job.attempts = JobState.RUNNING, "w:1", 1
    real = jobs_api._job

    def read_then_worker_finishes(s: Any, p: Any, job_id: str) -> Any:
        job = real(s, p, job_id)
        assert job.state is JobState.RUNNING
        with Database(svc.settings.database_url).session() as other:  # the worker's commit, between the read and the write
            row = other.get(Job, job_id)
            assert row is not None
            row.state, row.message, row.exit_code = JobState.SUCCEEDED, "passed", 0
        return job

    monkeypatch.setattr(jobs_api, "_job", read_then_worker_finishes)
    r = svc.client.post(f"/api/v1/jobs/{jid}/cancel", headers=svc.h("sub-a"))
    assert r.status_code == 200 and r.json()["state"] == "succeeded", r.text
    monkeypatch.setattr(jobs_api, "_job", real)
    assert svc.client.get(f"/api/v1/jobs/{jid}", headers=svc.h("aud-a")).json()["state"] == "succeeded"


def test_an_unauthenticated_upload_is_refused_before_its_body_is_read(svc: Service) -> None:
    """Before: a 200 MB body without a valid token was read and parsed in full before the 401."""
    import time

    read = 0

    def body() -> Any:  # a multipart upload of 200 MB, streamed
        nonlocal read
        yield b'--XX\r\nContent-Disposition: form-data; name="scorecard"; filename="s.json"\r\nContent-Type: application/json\r\n\r\n'
        for _ in range(200):
            read += 1
            yield b"\0" * (1 << 20)
        yield b"\r\n--XX--\r\n"

    for headers in ({}, {"Authorization": "Bearer rl_not_a_token"}):
        read = 0
        t = time.monotonic()
        r = svc.client.post("/api/v1/projects/alpha/scorecards", headers={**headers, "Content-Type": "multipart/form-data; boundary=XX"}, content=body())
        assert r.status_code == 401, r.text
        assert read <= 2 and time.monotonic() - t < 5, (read, time.monotonic() - t)
    # a valid token still gets through to the endpoint's own checks
    r = svc.client.post("/api/v1/projects/alpha/jobs", headers=svc.h("sub-a"), data={"model_name": "d", "version": "1", "suite": "clean", "spec": "zoo:digits-cnn"})
    assert r.status_code == 201, r.text
