"""Headless Chromium drives the auditor UI of a real ``robustlab serve``: sign in through the form,
submit an evaluation, watch its job page, open an evaluation with its report, compare two versions
through the model page's form, download the evidence bundle. Screenshots are kept under the test's
tmp folder; no page may log a console message, an exception or a CSP violation."""

from __future__ import annotations

import json
import time
import zipfile
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
pytest.importorskip("multipart")

from cdp import Browser, chromium  # noqa: E402
from test_report_cards import make_card  # noqa: E402
from ui_helpers import record_evaluation, start_server  # noqa: E402

POLICY = b"rules:\n  - metric: clean/accuracy\n    op: '>='\n    threshold: 0.5\n"


@pytest.mark.slow  # a server, Chromium and eight page loads: about 25 s on 2 cores
@pytest.mark.timeout(240)
def test_auditor_journey_in_headless_chromium(tmp_path: Path) -> None:
    exe = chromium()
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    srv = start_server(tmp_path / "data")
    browser = None
    try:
        assert srv.api("POST", "/api/v1/projects", json={"name": "alpha"}).status_code == 201
        sub = srv.token("sub-a", "submitter", "alpha")
        _j1, c1 = record_evaluation(srv.data_dir, tmp_path / "w", project="alpha", model="net", version="1", card=make_card(seed=0), policy=POLICY)
        _j2, c2 = record_evaluation(srv.data_dir, tmp_path / "w", project="alpha", model="net", version="2", card=make_card(seed=1, robust_acc=0.3))
        browser = Browser(exe, tmp_path / "profile")
        b = browser
        shots = tmp_path / "screenshots"
        shots.mkdir()
        # sign in through the form
        b.goto(srv.url + "/")
        assert "/signin" in b.js("location.pathname")
        b.screenshot(shots / "1-signin.png")
        b.js(f"document.querySelector('input[name=token]').value = {json.dumps(sub)}")
        b.load(lambda: b.js("document.querySelector('form[action=\"/signin\"]').submit()"))
        assert b.js("location.pathname") == "/" and "alpha" in b.js("document.body.innerText")
        # submit from the UI and land on the job page, which refreshes itself
        b.goto(srv.url + "/ui/projects/alpha/submit")
        b.js("document.querySelector('input[name=model_name]').value = 'digits'; document.querySelector('input[name=version]').value = 'from-ui';"
             "document.querySelector('input[name=limit]').value = '20'")
        b.load(lambda: b.js("document.querySelector('form[enctype]').submit()"))
        assert b.js("location.pathname").startswith("/ui/jobs/"), b.js("document.body.innerText")
        assert b.js("document.getElementById('job-state').textContent") == "queued"
        assert b.js("document.querySelector('meta[http-equiv=refresh]') !== null")
        b.screenshot(shots / "2-job.png")
        # the evaluation page: signature, gate, and the report in its sandboxed frame
        n = len(b.events)
        b.goto(f"{srv.url}/ui/evaluations/{c1}")
        assert b.js("document.getElementById('signature-state').textContent") == "valid-trusted"
        assert b.js("document.getElementById('gate-outcome').textContent") == "pass"
        frame = b.js("(function(){var f=document.querySelector('iframe.report'); return [f.getAttribute('sandbox'), f.getAttribute('src'), f.offsetHeight];})()")
        assert frame[0] == "" and frame[1] == f"/ui/evaluations/{c1}/report" and frame[2] > 500, frame
        inside = b.frame_session(after=n)  # the report, loaded in its sandboxed frame
        deadline = time.monotonic() + 30
        while "Verdict and gates" not in (b.js("document.body ? document.body.innerText : ''", session=inside) or ""):
            assert time.monotonic() < deadline, "the report frame did not load"
            time.sleep(0.2)
        assert b.js("self.origin", session=inside) == "null"  # sandboxed: an opaque origin, no access to the UI
        b.js("document.querySelector('iframe.report').scrollIntoView()")
        b.screenshot(shots / "3-evaluation.png")
        b.goto(f"{srv.url}/ui/evaluations/{c1}/report")
        assert "Verdict and gates" in b.js("document.body.innerText")
        b.screenshot(shots / "4-report.png")
        # compare two versions through the model page's form
        b.goto(srv.url + "/ui/projects/alpha/models/net")
        assert b.js("document.querySelectorAll('svg.plot').length") == 4
        # drawn with the report's plot styles (unstyled, the plot frame fills black)
        assert b.js("getComputedStyle(document.querySelector('svg.plot .frame')).fill") == "none"
        b.screenshot(shots / "5-model.png")
        b.load(lambda: b.js("document.querySelector('form[action=\"/ui/compare\"]').submit()"))
        assert b.js("location.pathname") == "/ui/compare" and "exact McNemar" in b.js("document.body.innerText")
        assert b.js("location.search") == f"?a={c1}&b={c2}"  # older version as A, newer as B by default
        assert b.js("document.querySelectorAll('#mcnemar tr').length") >= 3
        b.screenshot(shots / "6-compare.png")
        # download the evidence bundle by clicking its link
        downloads = tmp_path / "downloads"
        downloads.mkdir()
        b.call("Browser.setDownloadBehavior", behavior="allow", downloadPath=str(downloads), eventsEnabled=True)
        b.goto(f"{srv.url}/ui/evaluations/{c2}")
        n = len(b.events)
        b.js("document.getElementById('bundle').click()")
        b.wait_event("Browser.downloadProgress", after=n, where=lambda e: e["params"].get("state") == "completed")
        (zpath,) = [p for p in downloads.iterdir() if p.suffix == ".zip"]
        names = set(zipfile.ZipFile(zpath).namelist())
        assert {"scorecard.json", "signature.json", "report.html", "per_sample.csv", "environment.json", "MANIFEST.json"} <= names
        assert b.console_problems() == []
        assert all(p.stat().st_size > 5000 for p in shots.iterdir())
    finally:
        if browser is not None:
            browser.close()
        srv.stop()
