"""Ed25519 signing and verification of scorecards (embedded and detached), and the model hash check."""

from __future__ import annotations

import hashlib
import json
import os
import stat

import pytest
from click.testing import CliRunner
from test_report_cards import make_card

from robustlab.cli import main
from robustlab.errors import RobustlabError
from robustlab.signing import SignatureState, canonical_bytes, generate_key, sign_scorecard, verify_scorecard


@pytest.fixture()
def signed(tmp_path):
    model = tmp_path / "model.pt"
    model.write_bytes(b"pretend weights " * 100)
    card = make_card(sha256=hashlib.sha256(model.read_bytes()).hexdigest())
    path = card.write(tmp_path / "scorecard.json")
    priv, pub = generate_key(tmp_path / "keys" / "signer.pem")
    sign_scorecard(path, priv)
    return path, priv, pub, model


def test_key_files(signed):
    _path, priv, pub, _m = signed
    assert stat.S_IMODE(os.stat(priv).st_mode) == 0o600
    assert pub.name == "signer.pub.pem" and b"PUBLIC KEY" in pub.read_bytes()
    with pytest.raises(RobustlabError, match="already exists"):
        generate_key(priv)


def test_valid_signature_trusted_and_model_matches(signed):
    path, _priv, pub, model = signed
    v = verify_scorecard(path, public_key=pub, model_path=model)
    assert v.state is SignatureState.VALID_TRUSTED and v.model_check is True and v.ok
    d = json.loads(path.read_text())
    assert d["signature"]["algorithm"] == "ed25519"
    assert d["signature"]["payload_sha256"] == hashlib.sha256(canonical_bytes(d)).hexdigest()
    assert verify_scorecard(path).state is SignatureState.VALID_UNTRUSTED


@pytest.mark.parametrize("edit", ["metric", "model_sha", "data", "suite", "per_sample", "reorder_whitespace"])
def test_tampering_is_detected(signed, edit):
    path, _priv, pub, _m = signed
    d = json.loads(path.read_text())
    if edit == "metric":
        d["checks"][1]["metrics"]["adversarial/pgd/robust_accuracy"] += 0.01
    elif edit == "model_sha":
        d["model"]["sha256"] = "0" * 64
    elif edit == "data":
        d["data"]["spec"] = "samples:mnist"
    elif edit == "suite":
        d["suite"]["name"] = "quick"
    elif edit == "per_sample":
        d["checks"][1]["per_sample"]["robust@eps=0.03137"][0] = not d["checks"][1]["per_sample"]["robust@eps=0.03137"][0]
    path.write_text(json.dumps(d, indent=4 if edit == "reorder_whitespace" else 1))
    v = verify_scorecard(path, public_key=pub)
    if edit == "reorder_whitespace":  # formatting is not content: canonical JSON still verifies
        assert v.state is SignatureState.VALID_TRUSTED
    else:
        assert v.state is SignatureState.INVALID and not v.ok and "modified" in v.messages[0]


def test_wrong_trusted_key_and_tampered_model(signed, tmp_path):
    path, _priv, _pub, model = signed
    _p2, other_pub = generate_key(tmp_path / "other.pem")
    v = verify_scorecard(path, public_key=other_pub)
    assert v.state is SignatureState.INVALID and "NOT the trusted key" in v.messages[0]
    model.write_bytes(model.read_bytes() + b"backdoor")
    v = verify_scorecard(path, model_path=model)
    assert v.model_check is False and not v.ok


def test_detached_signature(tmp_path):
    path = make_card().write(tmp_path / "scorecard.json")
    priv, pub = generate_key(tmp_path / "k.pem")
    before = path.read_bytes()
    sig = sign_scorecard(path, priv, detached=True)
    assert sig.name == "scorecard.json.sig" and path.read_bytes() == before
    assert verify_scorecard(path, public_key=pub).state is SignatureState.VALID_TRUSTED
    d = json.loads(before)
    d["run"]["seed"] = 1
    path.write_text(json.dumps(d))
    assert verify_scorecard(path, public_key=pub).state is SignatureState.INVALID


def test_unsigned_scorecard(tmp_path):
    path = make_card().write(tmp_path / "scorecard.json")
    v = verify_scorecard(path)
    assert v.state is SignatureState.UNSIGNED and not v.ok


def test_encrypted_key_needs_passphrase(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTLAB_KEY_PASSPHRASE", "s3cret")
    priv, pub = generate_key(tmp_path / "enc.pem")
    assert b"ENCRYPTED" in priv.read_bytes()
    path = make_card().write(tmp_path / "scorecard.json")
    sign_scorecard(path, priv)
    assert verify_scorecard(path, public_key=pub).state is SignatureState.VALID_TRUSTED
    monkeypatch.delenv("ROBUSTLAB_KEY_PASSPHRASE")
    with pytest.raises(RobustlabError, match="ROBUSTLAB_KEY_PASSPHRASE"):
        sign_scorecard(path, priv)


def test_sign_verify_cli(tmp_path):
    runner = CliRunner()
    model = tmp_path / "m.bin"
    model.write_bytes(b"\x00\x01" * 50)
    path = make_card(sha256=hashlib.sha256(model.read_bytes()).hexdigest()).write(tmp_path / "scorecard.json")
    key = tmp_path / "key.pem"
    res = runner.invoke(main, ["sign", str(path), "--generate-key", str(key)])
    assert res.exit_code == 0, res.output
    pub = tmp_path / "key.pub.pem"
    res = runner.invoke(main, ["verify", str(path), "--public-key", str(pub), "--model", str(model), "--require-trusted"])
    assert res.exit_code == 0 and "VERIFIED" in res.output, res.output
    assert runner.invoke(main, ["verify", str(path), "--require-trusted"]).exit_code == 1
    d = json.loads(path.read_text())
    d["checks"][0]["metrics"]["clean/accuracy"] = 0.99
    path.write_text(json.dumps(d, indent=1))
    res = runner.invoke(main, ["verify", str(path), "--public-key", str(pub)])
    assert res.exit_code == 1 and "NOT VERIFIED" in res.output
    assert runner.invoke(main, ["sign", str(path)]).exit_code == 2
    assert runner.invoke(main, ["verify", str(tmp_path / "none.json")]).exit_code == 2
