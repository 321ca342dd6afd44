"""Service job API: what a request may submit (hostile uploads refused), who may do what, and a
real job run by the embedded worker: signed with the service key, verified, gated, stored once."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import torch  # noqa: E402
from service_helpers import Service, make_service  # noqa: E402

POLICY_PASS = b"rules:\n  - metric: clean/accuracy\n    op: '>='\n    threshold: 0.5\n"
POLICY_FAIL = b"rules:\n  - metric: clean/accuracy\n    op: '>='\n    threshold: 1.01\n"


@pytest.fixture()
def svc(tmp_path: Path) -> Service:
    return make_service(tmp_path / "data", max_upload_bytes=2_000_000)


def _digits_safetensors() -> bytes:
    from safetensors.torch import save

    from robustlab.models.architectures import ARCHITECTURES

    net = ARCHITECTURES["digits-cnn"]()
    return save({k: v.contiguous() for k, v in net.state_dict().items()})


def _submit(svc: Service, who: str = "sub-a", project: str = "alpha", files: dict[str, tuple[str, bytes]] | None = None, **data: str) -> "object":
    form = {"model_name": "digits", "version": "1", "suite": "clean", **data}
    return svc.client.post(f"/api/v1/projects/{project}/jobs", headers=svc.h(who), data=form,
                           files={k: (n, io.BytesIO(b)) for k, (n, b) in (files or {}).items()})


def test_hostile_model_uploads_are_refused(svc: Service, tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("pwned",))

    r = _submit(svc, files={"model": ("m.safetensors", pickle.dumps(Evil()))}, arch="zoo-arch:digits-cnn")
    assert r.status_code == 415, r.text  # a pickle named .safetensors: judged by content
    # a torch.save'd whole module (full pickle inside a zip) and a TorchScript archive
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(net), buf)
    r = _submit(svc, files={"model": ("m.pt", buf.getvalue())}, arch="zoo-arch:digits-cnn")
    assert r.status_code == 415, r.text
    # oversized (the limit is 2 MB here), and a body larger than the whole-request limit
    r = _submit(svc, files={"model": ("m.safetensors", b"\0" * 2_100_000)}, arch="zoo-arch:digits-cnn")
    assert r.status_code == 413, r.text
    # code-running specs and architectures, paths, trust-code formats
    for bad in ({"spec": "state-dict:/etc/passwd"}, {"spec": "torchscript:/tmp/x.pt"}, {"spec": "factory:os:system"},
                {"spec": "zoo:digits-cnn", "suite": "/etc/passwd"}, {"spec": "zoo:digits-cnn", "suite": "../suites/clean"},
                {"spec": "zoo:digits-cnn", "data": "npz:/etc/x.npz"}, {"spec": "zoo:digits-cnn", "model_name": "../../x"},
                {"spec": "zoo:digits-cnn", "version": "a/b"}):
        r = _submit(svc, **bad)
        assert r.status_code in (400, 422), (bad, r.status_code, r.text)
    r = _submit(svc, files={"model": ("m.safetensors", b"x")}, arch="factory:os:system")
    assert r.status_code == 400, r.text
    assert not list((svc.settings.artifact_dir).rglob("*")) or all(p.is_dir() for p in svc.settings.artifact_dir.rglob("*"))
    assert not list((svc.settings.data_dir / "tmp").glob("upload-*"))  # refused uploads leave nothing behind


def test_a_weights_only_upload_is_accepted_and_versions_are_immutable(svc: Service) -> None:
    blob = _digits_safetensors()
    r = _submit(svc, files={"model": ("m.bin", blob)}, arch="zoo-arch:digits-cnn")
    assert r.status_code == 201, r.text
    assert r.json()["state"] == "queued"
    r = _submit(svc, files={"model": ("m.bin", blob + b" ")}, arch="zoo-arch:digits-cnn")  # same version, other bytes
    assert r.status_code in (409, 415), r.text
    r = _submit(svc, spec="zoo:digits-cnn")  # same version, other model
    assert r.status_code == 409, r.text


def test_roles_and_projects_on_jobs(svc: Service) -> None:
    assert _submit(svc, who="aud-a", spec="zoo:digits-cnn").status_code == 403  # auditors never submit
    assert _submit(svc, who="sub-b", spec="zoo:digits-cnn").status_code == 404  # another project's token
    r = _submit(svc, spec="zoo:digits-cnn")
    assert r.status_code == 201
    jid = r.json()["id"]
    c = svc.client
    assert c.get(f"/api/v1/jobs/{jid}", headers=svc.h("aud-a")).status_code == 200
    for who in ("aud-b", "sub-b"):
        assert c.get(f"/api/v1/jobs/{jid}", headers=svc.h(who)).status_code == 404
        assert c.get("/api/v1/projects/alpha/jobs", headers=svc.h(who)).status_code == 404
    assert c.post(f"/api/v1/jobs/{jid}/cancel", headers=svc.h("aud-a")).status_code == 403
    assert c.get(f"/api/v1/jobs/{jid}/files/..%2F..%2Frobustlab.db", headers=svc.h("aud-a")).status_code == 404
    assert c.post(f"/api/v1/jobs/{jid}/cancel", headers=svc.h("sub-a")).json()["state"] == "cancelled"


@pytest.mark.slow  # two real evaluate processes and MLflow: about a minute on 2 cores
@pytest.mark.timeout(300)
def test_a_job_runs_on_a_worker_and_is_signed_verified_gated_and_stored_once(svc: Service) -> None:
    from sqlalchemy import func, select

    from robustlab.service.db import Database
    from robustlab.service.models import StoredScorecard
    from robustlab.service.worker import Worker
    from robustlab.signing import load_public_key, verify_dict

    c = svc.client
    ok = _submit(svc, spec="zoo:digits-cnn", limit="30", files={"policy": ("p.yaml", POLICY_PASS)}).json()
    bad = _submit(svc, version="2", spec="zoo:digits-cnn", limit="30", baseline="1", files={"policy": ("p.yaml", POLICY_FAIL)})
    assert bad.status_code == 400  # version 1 has no scorecard yet: the baseline is refused at submission
    worker = Worker(svc.settings, poll_s=0.1, heartbeat_s=0.2)
    assert worker.run_once()
    job = c.get(f"/api/v1/jobs/{ok['id']}", headers=svc.h("aud-a")).json()
    assert job["state"] == "succeeded" and job["exit_code"] == 0, job
    sc = job["scorecard"]
    assert sc["signature_state"] == "valid-trusted" and sc["gate_outcome"] == "pass"
    assert {"scorecard", "signature", "report", "policy", "junit", "environment"} <= set(job["artifacts"])
    card = c.get(f"/api/v1/jobs/{ok['id']}/files/scorecard", headers=svc.h("aud-a")).json()
    pub = load_public_key(svc.settings.key_path.with_name("service.pub.pem"))
    assert verify_dict(card, trusted_keys=[pub]).state.value == "valid-trusted"  # signed with the service key
    resp = c.get(f"/api/v1/jobs/{ok['id']}/files/report", headers=svc.h("aud-a"))
    assert "valid-trusted" in resp.text or "verified" in resp.text.lower()
    assert "default-src 'none'" in resp.headers["content-security-policy"]  # stored HTML can run no script
    # a failing gate against the first version as baseline: exit 1, recorded, still one scorecard per job. The policy
    # requires signatures: the job's run trusts what the service trusts (before: exit 2, no trusted key), and the
    # baseline and the new card, both signed by the service key, pass that rule
    r = _submit(svc, version="2", spec="zoo:digits-cnn", limit="30", baseline="1", files={"policy": ("p.yaml", b"signature: required\n" + POLICY_FAIL)})
    assert r.status_code == 201, r.text
    assert worker.run_once()
    job2 = c.get(f"/api/v1/jobs/{r.json()['id']}", headers=svc.h("aud-a")).json()
    assert job2["state"] == "succeeded" and job2["exit_code"] == 1 and job2["scorecard"]["gate_outcome"] == "fail", job2
    import xml.etree.ElementTree as ET

    junit = ET.fromstring(c.get(f"/api/v1/jobs/{r.json()['id']}/files/junit", headers=svc.h("aud-a")).content)
    cases = {tc.get("name"): tc.find("failure") is None for tc in junit.iter("testcase")}
    assert cases["signature: scorecard signed by a trusted key"] and cases["signature: baseline signed by a trusted key"], cases
    assert not cases["clean/accuracy >= 1.01"]
    assert not worker.run_once()
    with Database(svc.settings.database_url).session() as s:
        assert s.scalar(select(func.count()).select_from(StoredScorecard)) == 2
    # every job is an MLflow run in the service's tracking store
    from mlflow.tracking import MlflowClient

    run = MlflowClient(svc.settings.mlflow_uri).get_run(job["mlflow_run_id"])
    assert run.data.tags["robustlab.verdict"] == "pass"
    assert run.info.artifact_uri.startswith((svc.settings.data_dir / "mlartifacts").as_uri())  # not ./mlruns of the worker's folder
    m = c.get("/metrics").text
    assert 'robustlab_jobs{state="succeeded"} 2' in m and "robustlab_queue_depth 0" in m
    assert json.loads(json.dumps(job))  # JSON-clean


@pytest.mark.timeout(120)
def test_a_result_that_cannot_be_stored_fails_the_job_and_the_worker_goes_on(svc: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    import robustlab.service.finalize as fin
    import robustlab.service.runjob as runjob
    from robustlab.service.worker import Worker

    def broken(*_a: object, **_k: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(fin, "finalize", broken)
    # a run that exits 0 at once (the evaluate run itself is covered by the tests above)
    monkeypatch.setattr(runjob, "command_for", lambda *_a, **_k: [sys.executable, "-c", "pass"])
    jid = _submit(svc, spec="zoo:digits-cnn", limit="20").json()["id"]
    w = Worker(svc.settings, poll_s=0.1, heartbeat_s=0.2, warm=False)  # a stand-in command, not robustlab: no launcher
    assert w.run_once()
    job = svc.client.get(f"/api/v1/jobs/{jid}", headers=svc.h("aud-a")).json()
    assert job["state"] == "failed" and job["exit_code"] == 4 and "No space left" in job["message"], job
    assert job["scorecard"] is None
    assert not w.run_once()


def test_the_requeuer_retries_silent_workers_and_republishes_lost_messages(svc: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import timedelta

    import robustlab.service.queue as q
    from robustlab.service.db import Database
    from robustlab.service.models import Job, JobState, utcnow
    from robustlab.service.settings import Settings

    sent: list[str] = []
    monkeypatch.setattr(q, "publish", lambda _url, job_id: sent.append(job_id))
    st = Settings(data_dir=svc.settings.data_dir, suite_dir=svc.settings.suite_dir, queue_url="redis://127.0.0.1:1/0", heartbeat_timeout_s=5)
    a = _submit(svc, spec="zoo:digits-cnn").json()["id"]
    b = _submit(svc, version="2", spec="zoo:digits-cnn").json()["id"]
    with Database(st.database_url).session() as s:  # b: running on a worker that stopped heartbeating a minute ago
        job = s.get(Job, b)
        assert job is not None
        job.state, job.worker, job.attempts, job.heartbeat_at = JobState.RUNNING, "gone:1", 1, utcnow() - timedelta(seconds=60)
    r = q.Requeuer(st, republish_s=3600)
    r.tick()
    assert sorted(sent) == sorted([a, b])  # the queued job and the reaped one
    r.tick()
    assert len(sent) == 2  # not re-sent before republish_s
    r.republish_s = 0
    r.tick()
    assert len(sent) == 4
    with Database(st.database_url).session() as s:
        job = s.get(Job, b)
        assert job is not None and job.state is JobState.QUEUED and job.worker is None
        # a job whose workers were lost job_attempts times fails instead of looping forever
        job.state, job.worker, job.attempts, job.heartbeat_at = JobState.RUNNING, "gone:2", st.job_attempts, utcnow() - timedelta(seconds=60)
    r.tick()
    with Database(st.database_url).session() as s:
        job = s.get(Job, b)
        assert job is not None and job.state is JobState.FAILED and "lost" in job.message


def test_concurrent_first_submissions_of_one_model_all_succeed(svc: Service) -> None:
    """Found by bench/service_load.py: two submitters creating the same new model at once got 500."""
    from concurrent.futures import ThreadPoolExecutor

    from fastapi.testclient import TestClient

    from robustlab.service.app import create_app

    app = create_app(svc.settings)

    def submit(i: int) -> int:
        with TestClient(app) as c:
            r = c.post("/api/v1/projects/alpha/jobs", headers=svc.h("sub-a"), data={"model_name": "fresh", "version": f"v{i}", "spec": "zoo:digits-cnn"})
            return r.status_code

    with ThreadPoolExecutor(8) as ex:
        codes = list(ex.map(submit, range(16)))
    assert codes == [201] * 16, codes


@pytest.mark.timeout(120)
def test_cancelling_a_running_job_stops_its_process(svc: Service, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import sys
    import threading
    import time

    import robustlab.service.runjob as runjob
    from robustlab.service.worker import Worker

    pidfile = tmp_path / "child.pid"
    code = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    monkeypatch.setattr(runjob, "command_for", lambda *_a, **_k: [sys.executable, "-c", code])
    jid = _submit(svc, spec="zoo:digits-cnn").json()["id"]
    w = Worker(svc.settings, poll_s=0.1, heartbeat_s=0.2, warm=False)  # a stand-in command, not robustlab: no launcher
    t = threading.Thread(target=w.run_once)
    t.start()
    deadline = time.time() + 60
    while not pidfile.is_file() and time.time() < deadline:
        time.sleep(0.1)
    assert svc.client.get(f"/api/v1/jobs/{jid}", headers=svc.h("aud-a")).json()["state"] == "running"
    assert svc.client.post(f"/api/v1/jobs/{jid}/cancel", headers=svc.h("sub-a")).json()["state"] == "cancelled"
    t.join(timeout=30)
    assert not t.is_alive()
    pid = int(pidfile.read_text())
    import os

    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    job = svc.client.get(f"/api/v1/jobs/{jid}", headers=svc.h("aud-a")).json()
    assert job["state"] == "cancelled" and job["scorecard"] is None


@pytest.mark.timeout(120)
def test_a_job_whose_folder_is_still_held_by_an_earlier_attempt_waits_then_fails_honestly(svc: Service, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that lost the database for longer than the heartbeat timeout is replaced; until it
    notices, its run holds the job's folder and the new attempt's evaluate exits 2 on the lock. The
    new attempt waits for the lock (no attempt used); held past lock_wait_s, the job fails with
    exit 4 and says why (before: three attempts burnt, then 'failed' with exit 2, an input error)."""
    import sys

    import robustlab.service.runjob as runjob
    from robustlab.service.worker import Worker

    msg = "error: output folder DATA/out is in use by another run (pid 1 on host); wait for it to finish or pass another --out."
    monkeypatch.setattr(runjob, "command_for", lambda *_a, **_k: [sys.executable, "-c", f"import sys; print({msg!r}, file=sys.stderr); sys.exit(2)"])
    jid = _submit(svc, spec="zoo:digits-cnn").json()["id"]
    w = Worker(svc.settings, poll_s=0.1, heartbeat_s=0.2, warm=False, lock_wait_s=1)  # a stand-in command, not robustlab: no launcher
    assert w.run_once()
    job = svc.client.get(f"/api/v1/jobs/{jid}", headers=svc.h("aud-a")).json()
    assert job["state"] == "failed" and job["exit_code"] == 4 and job["attempts"] == 1, job  # bounded, and not called an input error
    assert "in use" in job["message"] and "input error" in job["message"], job["message"]


def test_the_job_command_is_robustlab_evaluate_built_from_stored_values(svc: Service) -> None:
    from robustlab.service.db import Database
    from robustlab.service.models import Job, Version
    from robustlab.service.runjob import command_for

    blob = _digits_safetensors()
    jid = _submit(svc, files={"model": ("m.bin", blob), "policy": ("p.yaml", POLICY_PASS)}, arch="zoo-arch:digits-cnn", gpus="2", limit="7").json()["id"]
    with Database(svc.settings.database_url).session() as s:
        job = s.get(Job, jid)
        assert job is not None
        ver = s.get(Version, job.version_id)
        assert ver is not None
        argv = command_for(svc.settings, job, ver, baseline_path=None, device="cpu", resume=True)
    assert argv[1:3] == ["-m", "torch.distributed.run"] and "--nproc_per_node=2" in argv  # several GPUs: torchrun
    i = argv.index("evaluate")
    assert argv[i - 1] == "-v" and argv[i - 2] == "robustlab"
    model = argv[argv.index("--model") + 1]
    assert model.startswith("state-dict:" + str(svc.settings.artifact_dir)) and model.endswith("model.safetensors")
    assert "--trust-code" not in argv and argv[argv.index("--arch") + 1] == "zoo-arch:digits-cnn"
    assert argv[argv.index("--limit") + 1] == "7" and argv[-1] == "--resume"
    assert argv[argv.index("--policy") + 1].startswith(str(svc.settings.artifact_dir))
    assert argv[argv.index("--out") + 1] == str(svc.settings.jobs_dir / jid / "out")
