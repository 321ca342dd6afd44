"""The auditor UI against a real ``robustlab serve`` on loopback: every page authorised by role and
project, forms refused without the session's CSRF token, hostile scorecard content escaped, the
evidence bundle complete and verifiable, headline metrics and compare taken from the scorecards."""

from __future__ import annotations

import hashlib
import io
import json
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
pytest.importorskip("multipart")

from robustlab.scorecard import Scorecard  # noqa: E402
from test_report_cards import make_card  # noqa: E402
from ui_helpers import Server, csrf_of, record_evaluation, signed_in, start_server  # noqa: E402

POLICY = b"rules:\n  - metric: clean/accuracy\n    op: '>='\n    threshold: 0.5\n"
EVIL = "<script>alert('x')</script><img src=x onerror=alert(1)>"


def hostile_card() -> Scorecard:
    card = make_card(seed=5)
    card.model["spec"] = f"zoo:{EVIL}"
    card.run["command"] = f"robustlab evaluate {EVIL}"
    card.environment["platform"] = EVIL
    card.data["spec"] = f"npz:{EVIL}.npz"
    card.checks[0].definitions["clean/accuracy"] = f"Top-1 accuracy {EVIL}"
    return card


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("ui")
    srv = start_server(tmp / "data")
    try:
        for name in ("alpha", "beta"):
            assert srv.api("POST", "/api/v1/projects", json={"name": name}).status_code == 201
        tokens = {"admin": srv.admin, "aud-a": srv.token("aud-a", "auditor", "alpha"), "sub-a": srv.token("sub-a", "submitter", "alpha"),
                  "aud-b": srv.token("aud-b", "auditor", "beta")}
        work = tmp / "work"
        j1, c1 = record_evaluation(srv.data_dir, work, project="alpha", model="net", version="1", card=make_card(seed=0), policy=POLICY)
        j2, c2 = record_evaluation(srv.data_dir, work, project="alpha", model="net", version="2", card=make_card(seed=1, robust_acc=0.3))
        jh, ch = record_evaluation(srv.data_dir, work, project="alpha", model="evil", version="1", card=hostile_card())
        jb, cb = record_evaluation(srv.data_dir, work, project="beta", model="other", version="1", card=make_card(seed=2))
        # a hostile scorecard pushed unsigned: stored and shown as such, its report rendered by the UI
        buf = io.BytesIO(hostile_card().to_json().encode())
        r = srv.api("POST", "/api/v1/projects/alpha/scorecards", token=tokens["sub-a"], files={"scorecard": ("s.json", buf)},
                    data={"model_name": "evil", "version": "pushed"})
        assert r.status_code == 201, r.text
        yield {"srv": srv, "tokens": tokens, "jobs": {"a1": j1, "a2": j2, "evil": jh, "b": jb},
               "cards": {"a1": c1, "a2": c2, "evil": ch, "b": cb, "pushed": r.json()["id"]}, "tmp": tmp}
    finally:
        srv.stop()


def _pages(e: dict[str, Any], key: str) -> list[str]:
    c, j = e["cards"][key], e["jobs"].get(key)
    pages = [f"/ui/evaluations/{c}", f"/ui/evaluations/{c}/report", f"/ui/evaluations/{c}/bundle.zip", f"/ui/evaluations/{c}/files/scorecard"]
    return pages + ([f"/ui/jobs/{j}"] if j else [])


def test_every_page_is_authorised_by_role_and_project(env: dict[str, Any]) -> None:
    srv: Server = env["srv"]
    anon = httpx.Client(base_url=srv.url)
    alpha = ["/", "/ui/projects/alpha", "/ui/projects/alpha/models/net", f"/ui/compare?a={env['cards']['a1']}&b={env['cards']['a2']}", *_pages(env, "a1")]
    for path in alpha:
        r = anon.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/signin", (path, r.status_code)
    aud_a, aud_b = signed_in(srv, env["tokens"]["aud-a"]), signed_in(srv, env["tokens"]["aud-b"])
    for path in alpha:
        assert aud_a.get(path).status_code == 200, path
        if path != "/":
            r = aud_b.get(path)
            assert r.status_code == 404, (path, r.status_code)  # project A is invisible to a token of project B
            assert "zoo:test-net" not in r.text and "valid-trusted" not in r.text and "evaluation 1" not in r.text
    # the same answer as for a project that does not exist
    assert aud_b.get("/ui/projects/alpha").text == aud_b.get("/ui/projects/nosuch").text.replace("nosuch", "alpha")
    for path in _pages(env, "b"):
        assert aud_a.get(path).status_code == 404 and aud_b.get(path).status_code == 200, path
    # comparing across projects needs both
    assert aud_b.get(f"/ui/compare?a={env['cards']['b']}&b={env['cards']['a1']}").status_code == 404
    assert "alpha" not in aud_b.get("/").text and "beta" in aud_b.get("/").text
    admin = signed_in(srv, env["tokens"]["admin"])
    assert "alpha" in admin.get("/").text and "beta" in admin.get("/").text
    # auditors never submit: neither the form nor a post with a valid CSRF token
    assert aud_a.get("/ui/projects/alpha/submit").status_code == 403
    csrf = csrf_of(aud_a.get("/").text)
    r = aud_a.post("/ui/projects/alpha/submit", data={"csrf": csrf, "model_name": "m", "version": "9", "spec": "zoo:digits-cnn", "suite": "clean"})
    assert r.status_code == 403
    assert "Submit an evaluation" not in aud_a.get("/ui/projects/alpha").text
    # path tricks reach no file
    for path in (f"/ui/evaluations/{env['cards']['a1']}/files/..%2F..%2Frobustlab.db", f"/ui/evaluations/{env['cards']['a1']}/files/model",
                 "/ui/jobs/..%2F..%2Frobustlab.db", "/ui/projects/..%2F..%2Fetc/models/passwd", "/ui/evaluations/-1", "/ui/evaluations/1%2F..%2F2"):
        r = aud_a.get(path)
        assert r.status_code in (404, 422) and "SQLite" not in r.text, (path, r.status_code)
    # a revoked token's session ends
    tid = next(t["id"] for t in srv.api("GET", "/api/v1/tokens").json() if t["name"] == "aud-b")
    assert srv.api("DELETE", f"/api/v1/tokens/{tid}").status_code == 204
    # (the API answers before its transaction commits: wait until the API itself refuses the token)
    for _ in range(50):
        if srv.api("GET", "/api/v1/whoami", token=env["tokens"]["aud-b"]).status_code == 401:
            break
        time.sleep(0.1)
    assert aud_b.get(f"/ui/evaluations/{env['cards']['b']}").status_code == 303


def _jobs(srv: Server, token: str) -> list[dict[str, Any]]:
    r = srv.api("GET", "/api/v1/projects/alpha/jobs", token=token)
    assert r.status_code == 200, r.text
    out: list[dict[str, Any]] = r.json()
    return out


def test_forms_need_the_sessions_csrf_token(env: dict[str, Any]) -> None:
    srv: Server = env["srv"]
    sub, other = signed_in(srv, env["tokens"]["sub-a"]), signed_in(srv, env["tokens"]["admin"])
    before = len(_jobs(srv, srv.admin))
    form = {"model_name": "digits", "version": "ui-1", "spec": "zoo:digits-cnn", "suite": "quick", "limit": "20"}
    assert sub.post("/ui/projects/alpha/submit", data=form).status_code == 403  # no token
    assert sub.post("/ui/projects/alpha/submit", data={**form, "csrf": csrf_of(other.get("/").text)}).status_code == 403  # another session's
    assert sub.post("/ui/projects/alpha/submit", data={**form, "csrf": "0" * 64}).status_code == 403
    assert sub.post("/signout", data={"csrf": ""}).status_code == 403
    assert len(_jobs(srv, srv.admin)) == before  # nothing was queued
    page = sub.get("/ui/projects/alpha/submit")
    assert page.status_code == 200 and 'enctype="multipart/form-data"' in page.text
    csrf = csrf_of(page.text)
    # the API's checks apply: a code-running spec is refused, and the message is shown escaped
    r = sub.post("/ui/projects/alpha/submit", data={**form, "csrf": csrf, "spec": "factory:os:<b>system</b>"})
    assert r.status_code in (400, 422) and "&lt;b&gt;system&lt;/b&gt;" in r.text and "<b>system</b>" not in r.text
    r = sub.post("/ui/projects/alpha/submit", data={**form, "csrf": csrf}, files={"policy": ("p.yaml", io.BytesIO(POLICY))})
    assert r.status_code == 303 and r.headers["location"].startswith("/ui/jobs/"), r.text
    job = sub.get(r.headers["location"])
    assert job.status_code == 200 and "queued" in job.text and '<meta http-equiv="refresh"' in job.text  # progress page refreshes itself
    jobs = _jobs(srv, srv.admin)
    assert len(jobs) == before + 1 and any(j["version"] == "ui-1" and j["suite"] == "quick" for j in jobs)
    assert sub.post("/signout", data={"csrf": csrf}).status_code == 303
    assert sub.get("/").status_code == 303


def test_submit_form_takes_weights_uploads_and_refuses_pickles(env: dict[str, Any]) -> None:
    import pickle

    from safetensors.torch import save

    from robustlab.models.architectures import ARCHITECTURES

    srv: Server = env["srv"]
    sub = signed_in(srv, env["tokens"]["sub-a"])
    csrf = csrf_of(sub.get("/ui/projects/alpha/submit").text)
    form = {"csrf": csrf, "model_name": "uploaded", "version": "w1", "suite": "quick", "arch": "zoo-arch:digits-cnn", "spec": ""}

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("pwned",))

    r = sub.post("/ui/projects/alpha/submit", data=form, files={"model": ("m.safetensors", io.BytesIO(pickle.dumps(Evil())))})
    assert r.status_code == 415 and 'id="message"' in r.text, r.text[-1500:]
    net = ARCHITECTURES["digits-cnn"]()
    blob = save({k: v.contiguous() for k, v in net.state_dict().items()})
    r = sub.post("/ui/projects/alpha/submit", data=form, files={"model": ("m.safetensors", io.BytesIO(blob))})
    assert r.status_code == 303, r.text[-1500:]
    models = {m["name"]: m for m in srv.api("GET", "/api/v1/projects/alpha/models").json()}
    (ver,) = models["uploaded"]["versions"]
    assert ver["arch"] == "zoo-arch:digits-cnn" and ver["sha256"] == hashlib.sha256(blob).hexdigest()


def test_hostile_scorecard_content_is_escaped_everywhere(env: dict[str, Any]) -> None:
    srv: Server = env["srv"]
    c = signed_in(srv, env["tokens"]["aud-a"])
    cards = env["cards"]
    pages = [f"/ui/evaluations/{cards['evil']}", f"/ui/evaluations/{cards['evil']}/report", f"/ui/evaluations/{cards['pushed']}",
             f"/ui/evaluations/{cards['pushed']}/report", f"/ui/compare?a={cards['a1']}&b={cards['evil']}", "/ui/projects/alpha/models/evil"]
    for path in pages:
        r = c.get(path)
        assert r.status_code == 200, path
        assert "<script" not in r.text.lower() and "onerror=alert" not in r.text.replace("onerror=alert(1)&gt;", ""), path
        csp = r.headers["content-security-policy"]
        assert "default-src 'none'" in csp and "script-src" not in csp, path  # nothing may run, even if something slipped through
    ev = c.get(f"/ui/evaluations/{cards['evil']}").text
    assert "&lt;script&gt;alert(" in ev  # shown, as text
    cmp = c.get(f"/ui/compare?a={cards['a1']}&b={cards['evil']}").text
    assert "&lt;script&gt;" in cmp and "model.spec" in cmp
    rep = c.get(f"/ui/evaluations/{cards['pushed']}/report")
    assert "sandbox" in rep.headers["content-security-policy"] and rep.headers["x-frame-options"] == "SAMEORIGIN"
    assert 'sandbox=""' in ev  # and the frame that shows it is sandboxed
    pushed = c.get(f"/ui/evaluations/{cards['pushed']}").text
    assert 'id="signature-state">unsigned<' in pushed


def test_evidence_bundle_is_complete_and_verifies(env: dict[str, Any]) -> None:
    from robustlab.signing import load_public_key, verify_dict

    srv: Server = env["srv"]
    c = signed_in(srv, env["tokens"]["aud-a"])
    r = c.get(f"/ui/evaluations/{env['cards']['a1']}/bundle.zip")
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    z = zipfile.ZipFile(io.BytesIO(r.content))
    names = set(z.namelist())
    assert {"scorecard.json", "signature.json", "report.html", "per_sample.csv", "policy.yaml", "environment.json", "verification.json", "MANIFEST.json"} <= names
    manifest = json.loads(z.read("MANIFEST.json"))
    for name, entry in manifest["files"].items():
        assert hashlib.sha256(z.read(name)).hexdigest() == entry["sha256"], name
    card = json.loads(z.read("scorecard.json"))
    pub = load_public_key(srv.data_dir / "keys" / "service.pub.pem")
    assert verify_dict(card, trusted_keys=[pub]).state.value == "valid-trusted"
    assert json.loads(z.read("verification.json"))["state"] == "valid-trusted"
    assert z.read("policy.yaml") == POLICY
    rows = z.read("per_sample.csv").decode().strip().splitlines()
    assert len(rows) == 1 + len(card["data"]["ids"])
    # a pushed, unsigned card: the bundle says so and still carries a report and the CSV
    zp = zipfile.ZipFile(io.BytesIO(c.get(f"/ui/evaluations/{env['cards']['pushed']}/bundle.zip").content))
    assert json.loads(zp.read("verification.json"))["state"] == "unsigned"
    assert {"report.html", "per_sample.csv", "environment.json"} <= set(zp.namelist())


def test_signature_status_is_verified_now_against_the_trust_store(env: dict[str, Any]) -> None:
    """Tampering with a stored scorecard after it was recorded shows as invalid, not as stored."""
    from robustlab.service.artifacts import path_of

    srv: Server = env["srv"]
    c = signed_in(srv, env["tokens"]["aud-a"])
    jid, cid = record_evaluation(srv.data_dir, env["tmp"] / "work2", project="alpha", model="tamper", version="1", card=make_card(seed=9))
    assert 'id="signature-state">valid-trusted<' in c.get(f"/ui/evaluations/{cid}").text
    p = path_of(srv.data_dir / "artifacts", f"jobs/{jid}/scorecard.json")
    raw = json.loads(p.read_text())
    raw["checks"][0]["metrics"]["clean/accuracy"] = 0.999
    p.write_text(json.dumps(raw))
    page = c.get(f"/ui/evaluations/{cid}").text
    assert 'id="signature-state">invalid<' in page and "When stored: valid-trusted" in page
    z = zipfile.ZipFile(io.BytesIO(c.get(f"/ui/evaluations/{cid}/bundle.zip").content))
    assert json.loads(z.read("verification.json"))["state"] == "invalid"


def test_missing_or_corrupt_stored_files_are_reported_not_crashed(env: dict[str, Any]) -> None:
    from robustlab.service.artifacts import path_of

    srv: Server = env["srv"]
    c = signed_in(srv, env["tokens"]["aud-a"])
    jid, cid = record_evaluation(srv.data_dir, env["tmp"] / "work3", project="alpha", model="broken", version="1", card=make_card(seed=11))
    path_of(srv.data_dir / "artifacts", f"jobs/{jid}/report.html").unlink()
    r = c.get(f"/ui/evaluations/{cid}/report")
    assert r.status_code == 500 and "missing from the service&#39;s artifact folder" in r.text and "Traceback" not in r.text
    path_of(srv.data_dir / "artifacts", f"jobs/{jid}/scorecard.json").write_text("{not json")
    r = c.get(f"/ui/evaluations/{cid}")
    assert r.status_code == 422 and r.headers["content-type"].startswith("text/html")


def test_model_page_and_compare_show_the_scorecards_numbers(env: dict[str, Any]) -> None:
    from robustlab.gates.compare import compare_scorecards
    from robustlab.service.ui.render import fmt

    srv: Server = env["srv"]
    c = signed_in(srv, env["tokens"]["aud-a"])
    page = c.get("/ui/projects/alpha/models/net").text
    assert page.count('<svg class="plot"') == 4  # clean, robust, OOD AUROC, certified accuracy (make_card has no corruption accuracy)
    cards = [make_card(seed=0).in_key_schema(), make_card(seed=1, robust_acc=0.3).in_key_schema()]
    key = "adversarial/pgd/robust_accuracy"
    for card in cards:
        v, ci = card.metrics()[key], card.intervals()[key]
        assert f"{fmt(v)} [{fmt(ci.low)}, {fmt(ci.high)}]" in page
    a, b = env["cards"]["a1"], env["cards"]["a2"]
    assert f'name="a"' in page and f'value="{a}"' in page and f'value="{b}"' in page
    cmp_page = c.get(f"/ui/compare?a={a}&b={b}").text
    cmp = compare_scorecards(cards[0], cards[1])
    for f in cmp.flags:
        r = f.result
        assert f"<code>{f.name}</code></td><td class=\"num\">{r.n}</td><td class=\"num\">{r.lost}</td><td class=\"num\">{r.gained}</td>" in cmp_page
    assert len(cmp.flags) >= 2 and "exact McNemar" in cmp_page


@pytest.mark.slow  # a real quick-suite evaluation on an embedded worker: about 40 s on 2 cores
@pytest.mark.timeout(400)
def test_served_submitted_job_is_visible_to_an_auditor(tmp_path: Path) -> None:
    """The issue's acceptance path: ``robustlab serve``, ``robustlab submit`` of zoo:digits-cnn with
    the quick suite and a policy; an auditor token sees the report, signature status and gate."""
    import re
    import subprocess
    import sys

    srv = start_server(tmp_path / "data", workers=1)
    try:
        assert srv.api("POST", "/api/v1/projects", json={"name": "alpha"}).status_code == 201
        sub, aud = srv.token("ci", "submitter", "alpha"), srv.token("auditor", "auditor", "alpha")
        (tmp_path / "p.yaml").write_bytes(POLICY)
        res = subprocess.run([sys.executable, "-m", "robustlab", "submit", "--server", srv.url, "--token", sub, "--model", "zoo:digits-cnn",
                              "--suite", "quick", "--policy", str(tmp_path / "p.yaml"), "--limit", "30", "--quiet"],
                             capture_output=True, text=True, timeout=360)
        assert res.returncode == 0, res.stdout + res.stderr
        c = signed_in(srv, aud)
        model_page = c.get("/ui/projects/alpha/models/digits-cnn")
        assert model_page.status_code == 200, model_page.text[:500]
        m = re.search(r'href="/ui/evaluations/(\d+)"', model_page.text)
        assert m, model_page.text[-3000:]
        ev = c.get(f"/ui/evaluations/{m.group(1)}").text
        assert 'id="signature-state">valid-trusted<' in ev and 'id="gate-outcome">pass<' in ev
        assert "clean/accuracy" in ev and "robust_accuracy" in ev
        report = c.get(f"/ui/evaluations/{m.group(1)}/report")
        assert report.status_code == 200 and "Verdict and gates" in report.text and "valid-trusted" in report.text.lower()
        assert "<svg" in model_page.text  # headline metrics plotted
    finally:
        srv.stop()


ADMIN_POSTS = (("/ui/admin/tokens", {"name": "x", "role": "admin"}), ("/ui/admin/tokens/1/revoke", {}), ("/ui/admin/projects", {"name": "gamma"}),
               ("/ui/admin/keys", {"name": "k", "public_key_pem": "x"}), ("/ui/admin/keys/abc/remove", {}))


def test_admin_pages_only_for_admins_with_csrf_tokens_shown_once_trust_store_and_queue(env: dict[str, Any], tmp_path: Path) -> None:
    import re

    from robustlab.service.db import Database
    from robustlab.service.models import Job, JobState
    from robustlab.service.settings import Settings
    from robustlab.signing import generate_key

    srv: Server = env["srv"]
    tokens_before = srv.api("GET", "/api/v1/tokens").json()
    # everyone but an admin gets exactly the answer of a page that does not exist
    for who in (None, "aud-a", "sub-a"):  # (aud-b was revoked by an earlier test)
        c = signed_in(srv, env["tokens"][who]) if who else httpx.Client(base_url=srv.url)
        csrf = csrf_of(c.get("/").text) if who else ""
        missing = c.get("/ui/no-such-page")
        r = c.get("/ui/admin")
        assert (r.status_code, r.text, r.headers["content-type"]) == (missing.status_code, missing.text, missing.headers["content-type"]), who
        assert "/ui/admin" not in c.get("/", follow_redirects=True).text
        for path, data in ADMIN_POSTS:
            r = c.post(path, data={**data, "csrf": csrf})
            assert r.status_code == 404 and r.text == c.post("/ui/no-such-page", data={"csrf": csrf}).text, (who, path)
    assert srv.api("GET", "/api/v1/tokens").json() == tokens_before
    assert [p["name"] for p in srv.api("GET", "/api/v1/projects").json()] == ["alpha", "beta"]

    admin = signed_in(srv, env["tokens"]["admin"])
    page = admin.get("/ui/admin")
    assert page.status_code == 200 and 'href="/ui/admin"' in admin.get("/").text
    assert "aud-a" in page.text and "the service's key" in page.text and 'id="queue-depth"' in page.text
    csrf = csrf_of(page.text)
    # forms need this session's CSRF token
    form = {"name": "ui-aud", "role": "auditor", "project": "alpha"}
    for bad in ("", "0" * 64, csrf_of(signed_in(srv, env["tokens"]["sub-a"]).get("/").text)):
        assert admin.post("/ui/admin/tokens", data={**form, "csrf": bad}).status_code == 403
    assert srv.api("GET", "/api/v1/tokens").json() == tokens_before
    # a token is shown once, works, and is revoked from the page
    r = admin.post("/ui/admin/tokens", data={**form, "csrf": csrf})
    assert r.status_code == 201, r.text
    m = re.search(r'<pre id="token-value">(rl_[A-Za-z0-9_-]+)</pre>', r.text)
    assert m and r.headers["cache-control"] == "no-store"
    value = m.group(1)
    assert srv.api("GET", "/api/v1/whoami", token=value).json() == {"name": "ui-aud", "role": "auditor", "project": "alpha"}
    again = admin.get("/ui/admin").text
    assert value not in again and value[:10] in again  # listed by its prefix only
    # invalid input is refused with a message, nothing stored
    r = admin.post("/ui/admin/tokens", data={"csrf": csrf, "name": "no-project", "role": "auditor"})
    assert r.status_code == 422 and "need a project" in r.text
    r = admin.post("/ui/admin/tokens", data={"csrf": csrf, "name": "<b>x</b>", "role": "auditor", "project": "alpha"})
    assert r.status_code == 422 and "<b>x</b>" not in r.text
    tid = next(t["id"] for t in srv.api("GET", "/api/v1/tokens").json() if t["name"] == "ui-aud")
    assert admin.post(f"/ui/admin/tokens/{tid}/revoke", data={"csrf": csrf}).status_code == 303
    for _ in range(50):
        if srv.api("GET", "/api/v1/whoami", token=value).status_code == 401:
            break
        time.sleep(0.1)
    assert srv.api("GET", "/api/v1/whoami", token=value).status_code == 401
    # the trust store: add a key (a bad PEM is refused), remove it; the service's own key stays
    _key, pub = generate_key(tmp_path / "team.pem")
    assert admin.post("/ui/admin/keys", data={"csrf": csrf, "name": "bad", "public_key_pem": "not a key"}).status_code == 422
    assert admin.post("/ui/admin/keys", data={"csrf": csrf, "name": "team-ui", "public_key_pem": pub.read_text()}).status_code == 303
    keys = {k["name"]: k["key_id"] for k in srv.api("GET", "/api/v1/trusted-keys").json()}
    assert "team-ui" in keys and "team-ui" in admin.get("/ui/admin").text
    r = admin.post(f"/ui/admin/keys/{keys['service']}/remove", data={"csrf": csrf})
    assert r.status_code == 409 and "stays trusted" in r.text
    assert admin.post(f"/ui/admin/keys/{keys['team-ui']}/remove", data={"csrf": csrf}).status_code == 303
    assert {k["name"] for k in srv.api("GET", "/api/v1/trusted-keys").json()} == {n for n in keys if n != "team-ui"}
    # workers and queue: depth, running jobs with their worker; hostile stored text is escaped
    r = srv.api("POST", "/api/v1/projects/alpha/jobs", token=env["tokens"]["sub-a"], data={"model_name": "q", "version": "1", "spec": "zoo:digits-cnn", "suite": "quick"})
    assert r.status_code == 201, r.text
    with Database(Settings(data_dir=srv.data_dir).database_url).session() as s:
        depth = s.query(Job).filter(Job.state == JobState.QUEUED).count()
        job = s.get(Job, r.json()["id"])
        assert job is not None
        job.state, job.worker, job.attempts, job.message = JobState.RUNNING, f"host{EVIL}:1", 1, f"check 1/2: {EVIL}"
    page = admin.get("/ui/admin").text
    assert f'<strong id="queue-depth">{depth - 1}</strong>' in page and f"/ui/jobs/{r.json()['id']}" in page
    assert EVIL not in page and "&lt;script&gt;" in page


def test_cookies_are_secure_when_the_browser_came_over_https(env: dict[str, Any]) -> None:
    """Before: the session cookie never had the Secure flag, so behind a TLS proxy a browser would still send it
    over plain HTTP. Over HTTPS (here: a proxy on loopback says so with X-Forwarded-Proto) both cookies are Secure;
    over plain HTTP (local use) they cannot be, or the browser would drop them."""
    srv: Server = env["srv"]
    for proto, secure in (("https", True), ("http", False)):
        form = httpx.get(srv.url + "/signin", timeout=30, headers={"X-Forwarded-Proto": proto})
        assert form.status_code == 200
        pre = [v for k, v in form.headers.multi_items() if k.lower() == "set-cookie"]
        # the browser behind the proxy sends the cookie back (httpx would not send a Secure one to an http:// URL)
        r = httpx.post(srv.url + "/signin", timeout=30, data={"token": env["tokens"]["aud-a"], "csrf": csrf_of(form.text)},
                       headers={"X-Forwarded-Proto": proto, "Cookie": pre[0].split(";")[0]})
        assert r.status_code == 303, r.text
        sess = [v for k, v in r.headers.multi_items() if k.lower() == "set-cookie" and v.startswith("rl_session=")]
        assert len(pre) == 1 and len(sess) == 1, (pre, sess)
        for cookie in (pre[0], sess[0]):
            flags = {f.strip().lower() for f in cookie.split(";")[1:]}
            assert ("secure" in flags) is secure and "httponly" in flags and "samesite=strict" in flags, (proto, cookie)
