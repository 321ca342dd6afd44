"""``robustlab push`` against a real service: a scorecard is filed under a model version only when
it is that version's model (409 otherwise, one line; the CLI prints it as one ``error:`` line and
exits 2), an oversized upload names the setting that limits it, and a refused upload never shows
the server's files."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

import robustlab  # noqa: E402
from service_helpers import ENV, RL, Server, Service, make_service  # noqa: E402

GOLDEN = Path(__file__).parent / "golden" / "quick.json"
DIGITS = Path(robustlab.__file__).parent / "models" / "zoo" / "digits-cnn.safetensors"
OTHER_SHA = "ab" * 32


@pytest.fixture()
def svc(tmp_path: Path) -> Service:
    return make_service(tmp_path / "data", max_upload_bytes=2_000_000)


def _card(**model: Any) -> dict[str, Any]:
    """The golden quick-suite scorecard of zoo:digits-cnn (its model's sha256 taken from the bundled
    file), with ``model`` fields replaced (``None`` removes one)."""
    card: dict[str, Any] = json.loads(GOLDEN.read_text())
    card.pop("signature", None)
    card["model"].update(spec="zoo:digits-cnn", architecture="zoo-arch:digits-cnn", sha256=hashlib.sha256(DIGITS.read_bytes()).hexdigest())
    for k, v in model.items():
        if v is None:
            card["model"].pop(k, None)
        else:
            card["model"][k] = v
    return card


def _push(svc: Service, card: dict[str, Any] | bytes, name: str | None = None, version: str | None = None,
          signature: bytes | None = None) -> Any:
    files: dict[str, Any] = {"scorecard": ("scorecard.json", card if isinstance(card, bytes) else json.dumps(card).encode())}
    if signature is not None:
        files["signature"] = ("scorecard.json.sig", signature)
    data = {"model_name": name, "version": version} if name else {}
    return svc.client.post("/api/v1/projects/alpha/scorecards", headers=svc.h("sub-a"), files=files, data=data)


def _submit(svc: Service, name: str, version: str, *, spec: str | None = None, weights: bytes | None = None) -> Any:
    form = {"model_name": name, "version": version, "suite": "clean", "limit": "10"}
    if spec is not None:
        form["spec"] = spec
    files = {"model": ("m.safetensors", io.BytesIO(weights))} if weights is not None else None
    if weights is not None:
        form["arch"] = "zoo-arch:digits-cnn"
    r = svc.client.post("/api/v1/projects/alpha/jobs", headers=svc.h("sub-a"), data=form, files=files)
    assert r.status_code == 201, r.text
    return r.json()


def _filed(svc: Service, name: str, version: str) -> list[int]:
    """Ids of the scorecards shown as evaluations of ``name``/``version``."""
    for m in svc.client.get("/api/v1/projects/alpha/models", headers=svc.h("aud-a")).json():
        for v in m["versions"]:
            if m["name"] == name and v["version"] == version:
                return [c["id"] for c in v["scorecards"]]
    raise AssertionError(f"no version {name}/{version}")


def _other_weights() -> bytes:
    """digits-cnn weights that are not the bundled ones (a retrained, regressed model)."""
    from safetensors.torch import load, save

    sd = load(DIGITS.read_bytes())
    first = sorted(sd)[0]
    sd[first] = sd[first] + 0.5
    return save({k: v.contiguous() for k, v in sd.items()})


def _refused(r: Any, *needles: str) -> str:
    assert r.status_code == 409, r.text
    detail: str = r.json()["detail"]
    assert "\n" not in detail and all(n in detail for n in needles), detail
    return detail


def test_a_trusted_scorecard_of_another_model_is_not_filed_under_a_zoo_version(svc: Service, tmp_path: Path) -> None:
    """The probe's case: v1 is zoo:cifar10-resnet18 (its job not run yet); a digits-cnn scorecard,
    signed by a trusted key, must not become v1's 'valid-trusted' evaluation."""
    from robustlab.signing import generate_key, sign_scorecard

    _submit(svc, "resnet", "v1", spec="zoo:cifar10-resnet18")
    key, pub = generate_key(tmp_path / "team.pem")
    assert svc.client.post("/api/v1/trusted-keys", headers=svc.h("admin"), json={"name": "team", "public_key_pem": pub.read_text()}).status_code == 201
    path = tmp_path / "card.json"
    path.write_text(json.dumps(_card()))
    sign_scorecard(path, key)
    signed = path.read_bytes()
    detail = _refused(_push(svc, signed, "resnet", "v1"), "zoo:cifar10-resnet18", "zoo:digits-cnn", "new version")
    assert "resnet" in detail and "v1" in detail
    assert _filed(svc, "resnet", "v1") == []
    assert not [f for f in svc.settings.artifact_dir.rglob("*") if f.is_file()]  # nothing stored
    assert not list((svc.settings.data_dir / "tmp").glob("upload-*"))
    # the same scorecard under the version of its own model is filed, and shows as trusted
    _submit(svc, "digits", "v1", spec="zoo:digits-cnn")
    r = _push(svc, signed, "digits", "v1")
    assert r.status_code == 201, r.text
    assert r.json()["signature_state"] == "valid-trusted" and _filed(svc, "digits", "v1") == [r.json()["id"]]


def test_a_good_scorecard_is_not_filed_under_a_regressed_version(svc: Service) -> None:
    _submit(svc, "digits", "w1", weights=DIGITS.read_bytes())
    regressed = _other_weights()
    _submit(svc, "digits", "w2", weights=regressed)
    good = _card()
    ok = _push(svc, good, "digits", "w1")
    assert ok.status_code == 201, ok.text
    _refused(_push(svc, good, "digits", "w2"), good["model"]["sha256"][:12], hashlib.sha256(regressed).hexdigest()[:12])
    assert _filed(svc, "digits", "w2") == [] and _filed(svc, "digits", "w1") == [ok.json()["id"]]
    # the right weights in another architecture are another model
    _refused(_push(svc, _card(architecture="torchvision:resnet18"), "digits", "w1"), "torchvision:resnet18", "zoo-arch:digits-cnn")
    # a scorecard that records no sha256 cannot be matched to a version that has one
    _refused(_push(svc, _card(sha256=None), "digits", "w1"), "not recorded")


def test_versions_made_by_push_keep_their_model_and_unidentified_versions_take_nothing(svc: Service) -> None:
    from robustlab.service.db import Database
    from robustlab.service.models import Model, Version

    first = _push(svc, _card(), "ext", "1")
    assert first.status_code == 201, first.text  # a new version takes its model from the scorecard
    assert _push(svc, _card(), "ext", "1").status_code == 201  # the same model again
    _refused(_push(svc, _card(sha256=OTHER_SHA, spec="state-dict:/elsewhere/other.safetensors"), "ext", "1"), OTHER_SHA[:12], "/elsewhere/other.safetensors")
    # no sha256: it cannot define a version, but it can be stored unfiled
    _refused(_push(svc, _card(sha256=None), "ext", "2"), "no model sha256", "without --name/--version")
    unfiled = _push(svc, _card(sha256=None))
    assert unfiled.status_code == 201 and unfiled.json()["version"] is None
    assert [v["version"] for m in svc.client.get("/api/v1/projects/alpha/models", headers=svc.h("aud-a")).json() for v in m["versions"]] == ["1"]
    # a version that records no model at all (made before pushes recorded one) takes no scorecard
    with Database(svc.settings.database_url).session() as s:
        mdl = s.query(Model).filter_by(name="ext").one()
        s.add(Version(model_id=mdl.id, version="legacy"))
    _refused(_push(svc, _card(), "ext", "legacy"), "records no model identity")
    assert _filed(svc, "ext", "legacy") == []


@pytest.mark.slow  # one real evaluate of the clean suite on 10 digits through a warm worker
@pytest.mark.timeout(300)
def test_a_version_evaluated_by_a_job_takes_only_scorecards_of_the_model_the_job_evaluated(svc: Service) -> None:
    """Before its job runs, a zoo version is known only by its spec; after, by the sha256 of the
    weights the service evaluated: a scorecard naming the same spec with other weights is refused."""
    from robustlab.service.worker import Worker

    job = _submit(svc, "digits", "z1", spec="zoo:digits-cnn")
    w = Worker(svc.settings, poll_s=0.1, heartbeat_s=0.2)
    try:
        assert w.run_once()
    finally:
        w.close()
    assert svc.client.get(f"/api/v1/jobs/{job['id']}", headers=svc.h("aud-a")).json()["state"] == "succeeded"
    evaluated = svc.client.get(f"/api/v1/jobs/{job['id']}/files/scorecard", headers=svc.h("aud-a")).json()["model"]["sha256"]
    _refused(_push(svc, _card(sha256=OTHER_SHA), "digits", "z1"), "zoo:digits-cnn", OTHER_SHA[:12], evaluated[:12])
    r = _push(svc, _card(sha256=evaluated), "digits", "z1")
    assert r.status_code == 201, r.text
    assert len(_filed(svc, "digits", "z1")) == 2  # the job's and the pushed one


def test_oversized_uploads_name_the_setting_that_limits_them(tmp_path: Path) -> None:
    svc = make_service(tmp_path / "data", max_document_bytes=4096, max_upload_bytes=2_000_000)
    r = _push(svc, _card())
    assert r.status_code == 413, r.text
    detail = r.json()["detail"]
    assert "scorecard" in detail and "--max-document-mb" in detail and "4096 bytes" in detail, detail
    assert "raise --max-upload-mb" not in detail and "for model files only" in detail, detail
    r = svc.client.post("/api/v1/projects/alpha/jobs", headers=svc.h("sub-a"), data={"model_name": "d", "version": "1", "suite": "clean", "spec": "zoo:digits-cnn"},
                        files={"policy": ("p.yaml", b"# " + b"x" * 5000 + b"\nrules: []\n")})
    assert r.status_code == 413 and "policy" in r.json()["detail"] and "--max-document-mb" in r.json()["detail"], r.text
    r = svc.client.post("/api/v1/projects/alpha/jobs", headers=svc.h("sub-a"), data={"model_name": "d", "version": "2", "suite": "clean", "arch": "zoo-arch:digits-cnn"},
                        files={"model": ("m.safetensors", b"\0" * 2_100_000)})
    assert r.status_code == 413 and "--max-upload-mb" in r.json()["detail"] and "--max-document-mb" not in r.json()["detail"], r.text
    assert not list((svc.settings.data_dir / "tmp").glob("upload-*"))


def test_refused_pushes_do_not_show_the_servers_files(svc: Service) -> None:
    good = json.dumps(_card()).encode()
    cases = [_push(svc, b'{"a": NaN}'), _push(svc, b"\xff\xfe not utf-8"), _push(svc, b"[1, 2"),
             _push(svc, good, signature=b'{"sig": '), _push(svc, good, signature=b"\xff")]
    for r in cases:
        assert r.status_code == 400, r.text
        detail = r.json()["detail"]
        assert str(svc.settings.data_dir) not in detail and "upload-" not in detail and "/tmp" not in detail, detail
    assert "the scorecard" in cases[0].json()["detail"] and "the signature" in cases[3].json()["detail"]
    assert not list((svc.settings.data_dir / "tmp").glob("upload-*"))


@pytest.mark.timeout(300)
def test_robustlab_push_prints_a_refusal_as_one_error_line_and_exits_2(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", "--workers", "0", "--max-document-mb", "1")
    try:
        assert srv.admin
        adm = srv.api(srv.admin)
        assert adm.post("/projects", json={"name": "alpha"}).status_code == 201
        sub = adm.post("/tokens", json={"name": "ci", "role": "submitter", "project": "alpha"}).json()["token"]
        r = srv.api(sub).post("/projects/alpha/jobs", data={"model_name": "resnet", "version": "v1", "suite": "quick", "spec": "zoo:cifar10-resnet18"})
        assert r.status_code == 201, r.text
        card = tmp_path / "card.json"
        card.write_text(json.dumps(_card()))
        push = [*RL, "push", str(card), "--server", srv.url, "--token", sub]
        res = subprocess.run([*push, "--name", "resnet", "--version", "v1"], env=ENV, capture_output=True, text=True, timeout=120)
        assert res.returncode == 2, res.stdout + res.stderr
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and "409" in lines[0] and "zoo:cifar10-resnet18" in lines[0], res.stderr
        assert "stored scorecard" not in res.stdout
        ok = subprocess.run([*push, "--name", "digits", "--version", "v1"], env=ENV, capture_output=True, text=True, timeout=120)
        assert ok.returncode == 0 and "stored scorecard" in ok.stdout, ok.stdout + ok.stderr
        big = tmp_path / "big.json"  # over `serve --max-document-mb 1`
        big.write_text(json.dumps({**_card(), "padding": "x" * (1 << 20)}))
        res = subprocess.run([*RL, "push", str(big), "--server", srv.url, "--token", sub], env=ENV, capture_output=True, text=True, timeout=120)
        assert res.returncode == 2 and "413" in res.stderr and "--max-document-mb" in res.stderr and "1 MiB" in res.stderr, res.stderr
    finally:
        srv.stop()

