"""Signing mistakes name the file the user got wrong: a public key given to `sign --key`, and a
detached signature that is not one (it was called "not a valid robustlab scorecard")."""

from __future__ import annotations

import json

from click.testing import CliRunner
from test_report_cards import make_card

from robustlab.cli import main
from robustlab.signing import generate_key, sign_scorecard


def _run(*args):
    return CliRunner().invoke(main, [*map(str, args)])


def test_sign_with_the_public_key_says_to_use_the_private_one(tmp_path):
    card = make_card().write(tmp_path / "scorecard.json")
    _priv, pub = generate_key(tmp_path / "release.pem")
    r = _run("sign", "--key", pub, card)
    assert r.exit_code == 2, r.output
    msg = r.output.strip()
    assert "public key" in msg and "private key" in msg, msg
    assert "PASSPHRASE" not in msg and len(msg.splitlines()) == 1, msg
    assert json.loads(card.read_text()).get("signature") is None  # nothing written


def test_garbage_detached_signature_is_named_as_a_signature(tmp_path, monkeypatch):
    monkeypatch.delenv("ROBUSTLAB_TRUSTED_KEYS", raising=False)
    card = make_card().write(tmp_path / "scorecard.json")
    priv, pub = generate_key(tmp_path / "release.pem")
    sign_scorecard(card, priv, detached=True)
    sig = tmp_path / "scorecard.json.sig"
    assert _run("verify", "--public-key", pub, card).exit_code == 0
    for bad in (b"\x00" * 4096, b"[1, 2]", b"not json"):
        sig.write_bytes(bad)
        for args in (("verify", "--public-key", pub, card), ("verify", "--public-key", pub, "--signature", sig, card)):
            r = _run(*args)
            msg = r.output.strip()
            assert r.exit_code == 2, (bad, r.output)
            assert "detached signature" in msg and "not a valid robustlab scorecard" not in msg, msg
            assert "robustlab sign --detached" in msg and len(msg.splitlines()) == 1, msg
