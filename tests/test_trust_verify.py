"""Issue 13, part 2: `verify` passes only a scorecard signed by a trusted key, and refuses ambiguous JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_report_cards import make_card

from robustlab.cli import main
from robustlab.signing import SignatureState, generate_key, sign_scorecard, verify_scorecard


@pytest.fixture()
def signed(tmp_path, monkeypatch):
    monkeypatch.delenv("ROBUSTLAB_TRUSTED_KEYS", raising=False)
    path = make_card().write(tmp_path / "scorecard.json")
    priv, pub = generate_key(tmp_path / "keys" / "release.pem")
    sign_scorecard(path, priv)
    return path, priv, pub


def _verify(*args):
    r = CliRunner().invoke(main, ["verify", *map(str, args)])
    return r


def _forge(path, tmp_path):
    d = json.loads(path.read_text())
    d["checks"][0]["metrics"]["clean/accuracy"] = 0.999
    d.pop("signature")
    path.write_text(json.dumps(d, indent=1))
    mallory, mallory_pub = generate_key(tmp_path / "mallory.pem")
    sign_scorecard(path, mallory)
    return mallory_pub


def test_forged_and_resigned_scorecard_is_not_verified(signed, tmp_path):
    path, _priv, pub = signed
    assert _verify(path, "--public-key", pub).exit_code == 0
    assert _verify(path).exit_code == 1  # intact but no trusted key: not a pass
    mallory_pub = _forge(path, tmp_path)
    r = _verify(path)
    assert r.exit_code == 1 and "NOT VERIFIED: valid-untrusted" in r.output, r.output
    r = _verify(path, "--public-key", pub)
    assert r.exit_code == 1 and "NOT the trusted key" in r.output
    # the trust store decides, not the key embedded in the file
    r = _verify(path, "--trusted-keys", pub.parent)
    assert r.exit_code == 1
    assert _verify(path, "--trusted-keys", mallory_pub).exit_code == 0  # ... unless you trust Mallory


def test_trust_store_env_and_baseline_signer(signed, tmp_path, monkeypatch):
    path, priv, pub = signed
    monkeypatch.setenv("ROBUSTLAB_TRUSTED_KEYS", str(pub.parent))
    assert _verify(path).exit_code == 0
    monkeypatch.delenv("ROBUSTLAB_TRUSTED_KEYS")
    base = make_card().write(tmp_path / "released.json")
    sign_scorecard(base, priv)
    assert _verify(path, "--baseline", base).exit_code == 0
    unsigned = make_card().write(tmp_path / "unsigned.json")
    r = _verify(path, "--baseline", unsigned)
    assert r.exit_code == 2 and "baseline" in r.stderr


def test_duplicate_key_before_the_real_one_is_refused(signed):
    path, _priv, pub = signed
    text = path.read_text()
    assert text.startswith("{\n")
    # an attacker's value first, the signed value last: a last-wins parser would still verify
    forged = '{\n "schema_version": "9.9",' + text[1:]
    path.write_text(forged)
    r = _verify(path, "--public-key", pub)
    assert r.exit_code == 2 and "duplicate key" in r.stderr and r.stderr.count("\n") == 1, (r.output, r.stderr)
    r = CliRunner().invoke(main, ["report", str(path)])
    assert r.exit_code == 2 and "duplicate key" in r.stderr


@pytest.mark.parametrize("payload,needle", [
    ('NaN', "non-finite"), ('Infinity', "non-finite"), ('-Infinity', "non-finite"), ('"\\ud800"', "surrogate"),
])
def test_non_finite_and_lone_surrogates_are_refused(signed, payload, needle):
    path, _priv, pub = signed
    text = path.read_text()
    path.write_text('{\n "extra_field": ' + payload + "," + text[1:])
    r = _verify(path, "--public-key", pub)
    assert r.exit_code == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("field", ["signed_at", "payload_sha256", "key_id", "format"])
def test_signature_block_fields_are_covered(signed, field):
    path, _priv, pub = signed
    d = json.loads(path.read_text())
    sig = d["signature"]
    sig[field] = {"signed_at": "2020-01-01T00:00:00+00:00", "payload_sha256": "0" * 64, "key_id": "0" * 16, "format": 3}[field]
    path.write_text(json.dumps(d, indent=1))
    v = verify_scorecard(path, public_key=pub)
    assert v.state is SignatureState.INVALID and not v.ok


def test_report_on_wrong_field_types_is_exit_2(tmp_path):
    good = json.loads(make_card().to_json())
    cases = {
        "metric string": lambda d: d["checks"][0]["metrics"].update({"clean/accuracy": "0.9"}),
        "checks not list": lambda d: d.update({"checks": "clean"}),
        "model list": lambda d: d.update({"model": []}),
        "status bogus": lambda d: d["checks"][0].update({"status": "fine"}),
        "notes int": lambda d: d["checks"][0].update({"notes": 3}),
        "interval string": lambda d: d["checks"][0].update({"intervals": {"clean/accuracy": {"low": "a", "high": 1}}}),
        "top-level list": None,
    }
    for name, edit in cases.items():
        d = json.loads(json.dumps(good))
        p = tmp_path / f"{name.replace(' ', '_')}.json"
        if edit is None:
            p.write_text("[1, 2]")
        else:
            edit(d)
            p.write_text(json.dumps(d))
        for cmd in (["report", str(p), "-o", str(tmp_path / "r.html")], ["gate", str(p), "--policy", str(Path(__file__).parents[1] / "reports" / "example-policy.yaml")]):
            r = CliRunner().invoke(main, cmd)
            assert r.exit_code == 2, (name, cmd[0], r.output, r.exception)
            assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, (name, r.stderr)
