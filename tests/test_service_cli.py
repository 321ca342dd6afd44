"""The service's commands end to end: ``robustlab serve`` on a fresh data folder, ``robustlab
submit`` of zoo:digits-cnn with a policy (exit = the gate's code), an auditor reading the signed,
gated result, a server restart keeping the history, ``robustlab push`` verified against the trust
store, and a worker killed with ``kill -9`` mid-job giving the scorecard of an uninterrupted run."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

from service_helpers import ENV, RL, TEST_SUITES, Server, Service, make_service  # noqa: E402
from procs import alive, descendants  # noqa: E402
from run_store import stored_batches  # noqa: E402

GOLDEN = Path(__file__).parent / "golden" / "quick.json"


def _post_card(svc: Service, path: Path, sig: Path | None = None) -> dict[str, Any]:
    files: dict[str, Any] = {"scorecard": ("scorecard.json", path.read_bytes())}
    if sig is not None:
        files["signature"] = ("scorecard.json.sig", sig.read_bytes())
    r = svc.client.post("/api/v1/projects/alpha/scorecards", headers=svc.h("sub-a"), files=files, data={"model_name": "digits", "version": "ext"})
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def test_pushed_scorecards_are_verified_against_the_trust_store(tmp_path: Path) -> None:
    from robustlab.signing import generate_key, sign_scorecard

    svc = make_service(tmp_path / "data")
    card = tmp_path / "card.json"
    shutil.copyfile(GOLDEN, card)
    assert _post_card(svc, card)["signature_state"] == "unsigned"
    key, pub = generate_key(tmp_path / "team.pem")
    sign_scorecard(card, key)
    assert _post_card(svc, card)["signature_state"] == "valid-untrusted"  # intact, but nobody vouched for the key
    r = svc.client.post("/api/v1/trusted-keys", headers=svc.h("sub-a"), json={"name": "team", "public_key_pem": pub.read_text()})
    assert r.status_code == 403  # only admins change the trust store
    r = svc.client.post("/api/v1/trusted-keys", headers=svc.h("admin"), json={"name": "team", "public_key_pem": pub.read_text()})
    assert r.status_code == 201, r.text
    stored = _post_card(svc, card)
    assert stored["signature_state"] == "valid-trusted"
    d = json.loads(card.read_text())
    d["checks"][0]["metrics"]["clean/accuracy"] = 0.999  # tampered after signing
    card.write_text(json.dumps(d))
    assert _post_card(svc, card)["signature_state"] == "invalid"
    # auditors read, other projects do not; the stored file is byte-identical
    got = svc.client.get(f"/api/v1/scorecards/{stored['id']}", headers=svc.h("aud-a"))
    assert got.status_code == 200 and got.json()["version"] == "ext"
    assert svc.client.get(f"/api/v1/scorecards/{stored['id']}", headers=svc.h("aud-b")).status_code == 404
    assert svc.client.post("/api/v1/projects/alpha/scorecards", headers=svc.h("aud-a"), files={"scorecard": ("s.json", b"{}")}).status_code == 403
    bad = svc.client.post("/api/v1/projects/alpha/scorecards", headers=svc.h("sub-a"), files={"scorecard": ("s.json", b"{\"a\": NaN}")})
    assert bad.status_code == 400, bad.text


@pytest.mark.slow  # the quick suite on 30 digits through a real server and worker: about a minute
@pytest.mark.timeout(600)
def test_serve_then_submit_gives_an_auditor_the_signed_gated_scorecard(tmp_path: Path) -> None:
    data = tmp_path / "data"
    srv = Server(data, "--workers", "1", "--suite-dir", str(TEST_SUITES))
    try:
        assert srv.admin, "a fresh install prints a first admin token"
        adm = [*RL, "admin", "--server", srv.url, "--token", srv.admin]
        assert subprocess.run([*adm, "project", "alpha"], env=ENV, capture_output=True, timeout=120).returncode == 0
        sub = subprocess.run([*adm, "token", "ci", "--role", "submitter", "--project", "alpha"], env=ENV, capture_output=True, text=True, timeout=120).stdout.strip()
        aud = subprocess.run([*adm, "token", "audit", "--role", "auditor", "--project", "alpha"], env=ENV, capture_output=True, text=True, timeout=120).stdout.strip()
        assert sub.startswith("rl_") and aud.startswith("rl_")
        no = subprocess.run([*RL, "admin", "--server", srv.url, "--token", aud, "project", "beta"], env=ENV, capture_output=True, text=True, timeout=120)
        assert no.returncode == 2 and "403" in no.stderr  # only admins administer
        pol = tmp_path / "gate.yaml"
        pol.write_text("rules:\n  - metric: clean/accuracy\n    op: '>='\n    threshold: 0.5\n")
        r = subprocess.run([*RL, "submit", "--server", srv.url, "--token", sub, "--model", "zoo:digits-cnn", "--suite", "quick", "--policy", str(pol),
                            "--limit", "30"], env=ENV, capture_output=True, text=True, timeout=400)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "check 2/4" in r.stderr or "check 3/4" in r.stderr  # progress was streamed
        job_id = re.search(r"job ([0-9a-f]{32})", r.stdout).group(1)  # type: ignore[union-attr]
        pol.write_text("rules:\n  - metric: clean/accuracy\n    op: '>='\n    threshold: 1.01\n")
        r2 = subprocess.run([*RL, "submit", "--server", srv.url, "--token", sub, "--model", "zoo:digits-cnn", "--version", "v2", "--suite", "clean",
                             "--policy", str(pol), "--limit", "30", "-q"], env=ENV, capture_output=True, text=True, timeout=300)
        assert r2.returncode == 1, r2.stdout + r2.stderr  # the gate failed: exit 1 like a local run
        r3 = subprocess.run([*RL, "submit", "--server", srv.url, "--token", aud, "--model", "zoo:digits-cnn", "--suite", "clean"],
                            env=ENV, capture_output=True, text=True, timeout=60)
        assert r3.returncode == 2 and "403" in r3.stderr  # an auditor cannot submit
    finally:
        srv.stop()
    srv = Server(data, "--workers", "0")  # restart: history intact, no new admin token
    try:
        assert srv.admin is None
        job = srv.api(aud).get(f"/jobs/{job_id}").json()
        assert job["state"] == "succeeded" and job["exit_code"] == 0
        assert job["scorecard"]["signature_state"] == "valid-trusted" and job["scorecard"]["gate_outcome"] == "pass"
        assert "report" in job["artifacts"] and srv.api(aud).get(f"/jobs/{job_id}/files/report").status_code == 200
        assert len(srv.api(aud).get("/projects/alpha/jobs").json()) == 2
    finally:
        srv.stop()


def _core(card: dict[str, Any]) -> list[Any]:
    return [(c["id"], c["status"], c["metrics"], c["per_sample"]) for c in card["checks"]]


@pytest.mark.slow  # two runs of a PGD suite (one killed and resumed) on two warm workers: about a minute
@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="follows the worker's process tree in Linux /proc")
@pytest.mark.timeout(900)
def test_a_worker_killed_mid_job_is_replaced_and_the_job_gives_the_uninterrupted_scorecard(tmp_path: Path) -> None:
    svc = make_service(tmp_path / "data", heartbeat_timeout_s=3.0)
    c = svc.client
    form = {"model_name": "digits", "spec": "zoo:digits-cnn", "suite": "killresume", "batch_size": "20", "seed": "5", "limit": "200"}
    ref = c.post("/api/v1/projects/alpha/jobs", headers=svc.h("sub-a"), data={**form, "version": "ref"}).json()
    job = c.post("/api/v1/projects/alpha/jobs", headers=svc.h("sub-a"), data={**form, "version": "killed"}).json()
    wcmd = [*RL, "worker", "--data-dir", str(svc.settings.data_dir), "--suite-dir", str(TEST_SUITES), "--device", "cpu", "--max-jobs", "1", "--heartbeat-timeout", "3"]
    w1 = subprocess.Popen([*wcmd[:-4], "--max-jobs", "2", *wcmd[-2:]], env=ENV)  # one warm worker: the reference run, then the one it dies in
    db = svc.settings.jobs_dir / job["id"] / "out" / "results.sqlite"
    deadline = time.time() + 600
    while stored_batches(db) < 12 and w1.poll() is None and time.time() < deadline:  # clean stores 10 batches; kill inside PGD
        time.sleep(0.05)
    assert w1.poll() is None, "the job finished before the worker could be killed; make the suite longer"
    assert c.get(f"/api/v1/jobs/{ref['id']}", headers=svc.h("aud-a")).json()["state"] == "succeeded"
    tree = descendants(w1.pid)
    assert tree, "the job runs in a process under the worker"
    w1.send_signal(signal.SIGKILL)
    w1.wait()
    # the launcher and the job die by PR_SET_PDEATHSIG, one link after the other: wait for the chain,
    # then no batch may be stored any more
    deadline = time.time() + 10
    while any(alive(p) for p in tree) and time.time() < deadline:
        time.sleep(0.02)
    assert not any(alive(p) for p in tree), "the run must die with its worker"
    partial = stored_batches(db)
    time.sleep(1.0)
    assert stored_batches(db) == partial, "the run must die with its worker"
    assert c.get(f"/api/v1/jobs/{job['id']}", headers=svc.h("aud-a")).json()["state"] == "running"
    assert subprocess.run(wcmd, env=ENV, timeout=600).returncode == 0  # a new worker reaps the stale job and resumes it
    got = c.get(f"/api/v1/jobs/{job['id']}", headers=svc.h("aud-a")).json()
    assert got["state"] == "succeeded" and got["attempts"] == 2, got
    a = c.get(f"/api/v1/jobs/{ref['id']}/files/scorecard", headers=svc.h("aud-a")).json()
    b = c.get(f"/api/v1/jobs/{job['id']}/files/scorecard", headers=svc.h("aud-a")).json()
    assert b["run"]["resumed"] is True and a["run"]["resumed"] is False
    assert _core(a) == _core(b)
    assert got["scorecard"]["signature_state"] == "valid-trusted"


@pytest.mark.parametrize("blocked, command, names", [
    ("python_multipart", ["serve", "--port", "0"], "python-multipart"),
    ("alembic", ["worker"], "alembic"),
])
def test_a_missing_service_extra_is_one_line_and_exit_2(tmp_path: Path, blocked: str, command: list[str], names: str) -> None:
    """`pip install robustlab` without `[service]` has FastAPI (through MLflow) but not the form parser:
    `robustlab serve` must say what to install, not crash with an internal error after starting."""
    code = (f"import sys; sys.modules[{blocked!r}] = None\n"
            "from robustlab.cli import main\n"
            f"sys.argv = ['robustlab', *{command!r}, '--data-dir', {str(tmp_path / 'data')!r}]\n"
            "main()\n")
    r = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and names in lines[0] and "pip install 'robustlab[service]'" in lines[0], r.stderr
    assert not (tmp_path / "data").exists()  # nothing was started or created
