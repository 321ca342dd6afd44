"""A policy can require signed scorecards: ``signature: required`` makes the scorecard gated from a file, and the
baseline (a file or an MLflow run), pass only when signed by a trusted key. Before, a policy had no way to say so:
an unsigned or re-signed card gated like a signed one, and a tampered MLflow baseline was not noticed at all."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_report_cards import make_card

from robustlab.cli import main
from robustlab.errors import PolicyError
from robustlab.gates import Requirement, parse_policy
from robustlab.signing import generate_key, sign_scorecard

REQUIRED = "signature: required\nrules:\n  - metric: clean/accuracy\n    op: '>='\n    threshold: 0.5\n"
REGRESSION = REQUIRED + "  - metric: clean/accuracy\n    max_drop: 0.05\n"


@pytest.fixture(autouse=True)
def _no_ambient_trust(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ROBUSTLAB_TRUSTED_KEYS", raising=False)
    monkeypatch.delenv("ROBUSTLAB_KEY_PASSPHRASE", raising=False)
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)


def _card(tmp_path: Path, name: str, *, seed: int = 0) -> Path:
    card = make_card(n=200, seed=seed)
    card.data["content_sha256"] = "11" * 32
    p = tmp_path / name
    p.write_text(json.dumps(card.to_dict()))
    return p


def _keys(tmp_path: Path, name: str) -> tuple[Path, Path]:
    return generate_key(tmp_path / f"{name}.pem")


def _gate(tmp_path: Path, card: Path, policy_text: str, *args: str) -> tuple[int, str, dict[str, str]]:
    pol = tmp_path / "policy.yaml"
    pol.write_text(policy_text)
    junit = tmp_path / "junit.xml"
    junit.unlink(missing_ok=True)
    r = CliRunner().invoke(main, ["gate", str(card), "--policy", str(pol), "--junit", str(junit), *args])
    cases: dict[str, str] = {}
    if junit.is_file():
        for tc in ET.parse(junit).getroot().iter("testcase"):
            cases[tc.get("name", "")] = "fail" if tc.find("failure") is not None else ("skip" if tc.find("skipped") is not None else "pass")
    return r.exit_code, r.output, cases


SIG = "signature: scorecard signed by a trusted key"
BASE_SIG = "signature: baseline signed by a trusted key"


def test_policy_parses_the_signature_requirement() -> None:
    assert parse_policy({"rules": []}).signature is Requirement.OPTIONAL
    assert parse_policy({"signature": "Required", "rules": []}).signature is Requirement.REQUIRED
    with pytest.raises(PolicyError, match="signature"):
        parse_policy({"signature": "maybe", "rules": []})
    with pytest.raises(PolicyError, match="signature"):
        parse_policy({"signature": True, "rules": []})


def test_required_signature_passes_only_a_card_signed_by_a_trusted_key(tmp_path: Path) -> None:
    priv, pub = _keys(tmp_path, "release")
    other_priv, other_pub = _keys(tmp_path, "other")
    unsigned = _card(tmp_path, "unsigned.json")
    code, out, cases = _gate(tmp_path, unsigned, REQUIRED, "--public-key", str(pub))
    assert code == 1, out
    assert cases[SIG] == "fail" and cases["clean/accuracy >= 0.5"] == "pass"
    assert "unsigned" in out and "robustlab sign" in out

    signed = _card(tmp_path, "signed.json")
    sign_scorecard(signed, priv)
    code, out, cases = _gate(tmp_path, signed, REQUIRED, "--public-key", str(pub))
    assert code == 0, out
    assert cases[SIG] == "pass"

    # a key in a trust folder, as with --trusted-keys or $ROBUSTLAB_TRUSTED_KEYS
    folder = tmp_path / "trust"
    folder.mkdir()
    (folder / "release.pem").write_bytes(pub.read_bytes())
    assert _gate(tmp_path, signed, REQUIRED, "--trusted-keys", str(folder))[0] == 0

    # intact, but signed by a key nobody trusts: anyone can re-sign an edited card
    resigned = _card(tmp_path, "resigned.json")
    sign_scorecard(resigned, other_priv)
    code, out, cases = _gate(tmp_path, resigned, REQUIRED, "--public-key", str(pub))
    assert code == 1 and cases[SIG] == "fail", out

    # a detached signature given by path
    detached = _card(tmp_path, "detached.json")
    sig = sign_scorecard(detached, priv, detached=True)
    moved = sig.rename(tmp_path / "elsewhere.sig")
    assert _gate(tmp_path, detached, REQUIRED, "--public-key", str(pub))[0] == 1
    assert _gate(tmp_path, detached, REQUIRED, "--public-key", str(pub), "--signature", str(moved))[0] == 0

    # without the requirement an unsigned card gates as before
    assert _gate(tmp_path, unsigned, REQUIRED.replace("signature: required\n", ""))[0] == 0


def test_required_signature_without_a_trusted_key_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    priv, pub = _keys(tmp_path, "release")
    signed = _card(tmp_path, "signed.json")
    sign_scorecard(signed, priv)
    code, out, _ = _gate(tmp_path, signed, REQUIRED)
    assert code == 2 and "no key is trusted" in out and "--public-key" in out and len(out.strip().splitlines()) == 1, out
    monkeypatch.setenv("ROBUSTLAB_TRUSTED_KEYS", str(pub))
    assert _gate(tmp_path, signed, REQUIRED)[0] == 0
    # a key file that does not exist is an input error, whatever the policy
    code, out, _ = _gate(tmp_path, signed, REQUIRED.replace("signature: required\n", ""), "--public-key", str(tmp_path / "nope.pem"))
    assert code == 2 and "nope.pem" in out and len(out.strip().splitlines()) == 1, out


def test_required_signature_covers_the_baseline(tmp_path: Path) -> None:
    priv, pub = _keys(tmp_path, "release")
    cand = _card(tmp_path, "cand.json")
    sign_scorecard(cand, priv)
    base = _card(tmp_path, "base.json", seed=1)
    code, out, cases = _gate(tmp_path, cand, REGRESSION, "--public-key", str(pub), "--baseline", str(base))
    assert code == 1, out
    assert cases[SIG] == "pass" and cases[BASE_SIG] == "fail"
    sign_scorecard(base, priv)
    code, out, cases = _gate(tmp_path, cand, REGRESSION, "--public-key", str(pub), "--baseline", str(base))
    assert cases[BASE_SIG] == "pass" and cases[SIG] == "pass", out


def test_report_shows_the_signature_rule(tmp_path: Path) -> None:
    priv, pub = _keys(tmp_path, "release")
    card = _card(tmp_path, "card.json")
    pol = tmp_path / "policy.yaml"
    pol.write_text(REQUIRED)
    out = tmp_path / "report.html"
    r = CliRunner().invoke(main, ["report", str(card), "-o", str(out), "--policy", str(pol), "--public-key", str(pub)])
    assert r.exit_code == 0, r.output
    html = out.read_text()
    assert SIG in html and "unsigned" in html


def test_a_tampered_mlflow_baseline_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The baseline's signature was checked for files only: an MLflow run's scorecard edited after signing gated."""
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from robustlab.scorecard import Scorecard
    from robustlab.tracking import log_scorecard

    priv, pub = _keys(tmp_path, "release")
    base = _card(tmp_path, "base.json", seed=1)
    sign_scorecard(base, priv)
    store = tmp_path / "store"
    store.mkdir()
    run_id = log_scorecard(Scorecard.read(base), out_dir=store, scorecard_path=base)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    cand = _card(tmp_path, "cand.json")
    sign_scorecard(cand, priv)
    args = ("--public-key", str(pub), "--baseline", run_id, "--mlflow-uri", uri)
    code, out, cases = _gate(tmp_path, cand, REGRESSION, *args)
    assert cases.get(BASE_SIG) == "pass", out

    stored = next((store / "mlartifacts").rglob("scorecard.json"))
    d = json.loads(stored.read_text())
    d["model"]["sha256"] = "00" * 32  # another model's baseline, numbers unchanged
    stored.write_text(json.dumps(d))
    code, out, _ = _gate(tmp_path, cand, REQUIRED.replace("signature: required\n", "") + "  - metric: clean/accuracy\n    max_drop: 0.05\n", *args)
    assert code == 2 and "does not match" in out, out


SUITE = "name: tiny\nchecks:\n  - check: clean\n"
EVAL_POLICY = "signature: required\nmin_samples: 10\nrules:\n  - metric: clean/accuracy\n    max_drop: 0.5\n"


def _evaluate(tmp_path: Path, out: str, *args: str) -> tuple[int, str]:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE)
    pol = tmp_path / "eval-policy.yaml"
    pol.write_text(EVAL_POLICY)
    r = CliRunner().invoke(main, ["evaluate", "--model", "zoo:digits-cnn", "--data", "digits", "--limit", "20", "--suite", str(suite),
                                  "--out", str(tmp_path / out), "--no-mlflow", "--no-report", "--policy", str(pol), *args])
    return r.exit_code, r.output


def test_evaluate_checks_the_baseline_signature_before_the_run(tmp_path: Path) -> None:
    """A policy requiring signatures with a --baseline and no trusted key is refused before the run (exit 2), not
    after it; with --trusted-keys the signed baseline passes and the card gated by its own run passes too."""
    priv, pub = _keys(tmp_path, "release")
    code, out = _evaluate(tmp_path, "first")
    assert code == 3, out  # the regression rule has no baseline; nothing needed a key
    cases = {tc.get("name"): tc.find("failure") is None for tc in ET.parse(tmp_path / "first" / "junit.xml").getroot().iter("testcase")}
    assert cases[SIG] and BASE_SIG not in cases  # the card is gated by the run that made it
    base = tmp_path / "first" / "scorecard.json"
    code, out = _evaluate(tmp_path, "refused", "--baseline", str(base))
    assert code == 2 and "no key is trusted" in out and "--trusted-keys" in out, out
    assert not (tmp_path / "refused" / "scorecard.json").exists()
    code, out = _evaluate(tmp_path, "unsigned", "--baseline", str(base), "--trusted-keys", str(pub))
    assert code == 1, out
    cases = {tc.get("name"): tc.find("failure") is None for tc in ET.parse(tmp_path / "unsigned" / "junit.xml").getroot().iter("testcase")}
    assert cases[SIG] and not cases[BASE_SIG]
    sign_scorecard(base, priv)
    code, out = _evaluate(tmp_path, "signed", "--baseline", str(base), "--trusted-keys", str(pub))
    assert code == 0, out


def test_variants_are_gated_against_their_own_base_without_a_signature(tmp_path: Path) -> None:
    """The base scorecard of --variants is written by the same command: the requirement does not apply to it."""
    code, out = _evaluate(tmp_path, "variants", "--variants", "fp16")
    assert code == 0, out
    cases = {tc.get("name"): tc.find("failure") is None for tc in ET.parse(tmp_path / "variants" / "fp16" / "junit.xml").getroot().iter("testcase")}
    assert cases[BASE_SIG] and cases[SIG]
