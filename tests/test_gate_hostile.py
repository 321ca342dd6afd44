"""A gate never passes on a scorecard or policy that does not support the claim (found by a hostile-input probe).

Each case passed (exit 0) before: an interval that does not hold its value, a fraction above 1, a metric two
checks report, a repeated key in a policy, a misspelt key with ``if_missing: skip``, a signed scorecard edited
after signing (as the candidate or as the baseline).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from test_report_cards import make_card

from robustlab.cli import main
from robustlab.gates import Outcome, evaluate_policy, parse_policy
from robustlab.scorecard import Scorecard

ACC = "clean/accuracy"


def _write(tmp_path: Path, name: str, d: dict) -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(d))
    return p


def _policy(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "policy.yaml"
    p.write_text(text)
    return p


def _card_dict() -> dict:
    card = make_card(n=200)
    card.data["content_sha256"] = "11" * 32
    return card.to_dict()


def _clean(d: dict) -> dict:
    return next(c for c in d["checks"] if ACC in c["metrics"])


def _gate(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, ["gate", *args])
    return r.exit_code, r.output


@pytest.mark.parametrize("edit, says", [
    (lambda c: c["metrics"].__setitem__(ACC, 0.10), "lies outside its wilson interval"),
    (lambda c: c["intervals"][ACC].update(low=0.99, high=0.5), "low end above its high end"),
    (lambda c: c["intervals"][ACC].update(level=1.5), "not in (0, 1)"),
    (lambda c: (c["metrics"].__setitem__(ACC, 1.5), c["intervals"].pop(ACC)), "is a fraction but lies outside [0, 1]"),
])
def test_a_scorecard_whose_numbers_contradict_each_other_is_refused(tmp_path: Path, edit, says):
    d = _card_dict()
    edit(_clean(d))
    rc, out = _gate(str(_write(tmp_path, "card.json", d)), "--policy", str(_policy(tmp_path, f"rules:\n  - metric: {ACC}\n    op: '>='\n    threshold: 0.5\n    on: lower\n")))
    assert rc == 2 and says in out and "contradict each other" in out and len(out.strip().splitlines()) == 1, out
    # verify and report still read it (to show a signature that no longer matches)
    assert CliRunner().invoke(main, ["verify", str(tmp_path / "card.json")]).exit_code == 1


def test_a_metric_reported_by_two_checks_or_a_repeated_check_id_is_refused(tmp_path: Path):
    d = _card_dict()
    other = next(c for c in d["checks"] if ACC not in c["metrics"])
    other["metrics"][ACC] = 0.1
    with pytest.raises(ValueError, match="reported by checks"):
        Scorecard.from_dict(d).validate_numbers()
    d = _card_dict()
    d["checks"].append(dict(d["checks"][0], metrics={}, intervals={}, counts={}))
    with pytest.raises(ValueError, match="two checks have the id"):
        Scorecard.from_dict(d).validate_numbers()


def test_legitimate_intervals_and_fractions_still_read():
    card = Scorecard.from_dict(_card_dict())
    card.validate_numbers()
    c = card.check(next(x.id for x in card.checks if ACC in x.metrics))
    assert c is not None and c.intervals[ACC].low <= c.metrics[ACC] <= c.intervals[ACC].high


def test_a_repeated_key_in_a_policy_or_suite_is_an_error(tmp_path: Path):
    card = _write(tmp_path, "card.json", _card_dict())
    rc, out = _gate(str(card), "--policy", str(_policy(tmp_path, f"rules:\n  - metric: {ACC}\n    op: '>='\n    threshold: 0.9\n    threshold: 0.1\n")))
    assert rc == 2 and "key 'threshold' appears twice" in out
    from robustlab.errors import SuiteError
    from robustlab.suite import parse_suite

    with pytest.raises(SuiteError, match="appears twice"):
        parse_suite("name: x\nchecks:\n  - check: clean\n    check: pgd\n")
    # merge keys still work: an explicit key may override a merged one
    assert yaml.safe_load("a: &b {x: 1}\nc:\n  <<: *b\n  x: 2\n")["c"] == {"x": 2}
    from robustlab.yamlio import safe_load_strict

    assert safe_load_strict("a: &b {x: 1}\nc:\n  <<: *b\n  x: 2\n")["c"] == {"x": 2}


def test_a_misspelt_metric_is_not_skipped_silently():
    card = make_card(n=200)
    typo = parse_policy({"rules": [{"metric": "clean/acuracy", "op": ">=", "threshold": 0.9, "if_missing": "skip"}]})
    r = evaluate_policy(card, typo).results[0]
    assert r.outcome is Outcome.INCONCLUSIVE and "did you mean 'clean/accuracy'" in r.message
    # another budget, class or check is another metric: skipped as the policy says
    for other in ("clean/class_12/accuracy", "adversarial/pgd_l1/robust_accuracy", "adversarial/pgd/eps_0.5/robust_accuracy"):
        pol = parse_policy({"rules": [{"metric": other, "op": ">=", "threshold": 0.9, "if_missing": "skip"}]})
        assert evaluate_policy(card, pol).results[0].outcome is Outcome.SKIPPED, other


def test_a_scorecard_edited_after_signing_is_refused_as_candidate_and_as_baseline(tmp_path: Path):
    runner = CliRunner()
    card = _write(tmp_path, "card.json", _card_dict())
    r = runner.invoke(main, ["sign", str(card), "--generate-key", str(tmp_path / "k.pem")])
    assert r.exit_code == 0, r.output
    pol = _policy(tmp_path, f"rules:\n  - metric: {ACC}\n    max_drop: 0.5\n")
    assert _gate(str(card), "--policy", str(pol), "--baseline", str(card))[0] == 0
    d = json.loads(card.read_text())
    c = _clean(d)
    c["metrics"][ACC] = c["intervals"][ACC]["high"]  # still a consistent scorecard, but not the signed one
    tampered = _write(tmp_path, "tampered.json", d)
    rc, out = _gate(str(tampered), "--policy", str(pol), "--baseline", str(card))
    assert rc == 2 and "modified after signing" in out
    rc, out = _gate(str(card), "--policy", str(pol), "--baseline", str(tampered))
    assert rc == 2 and out.startswith("error: baseline") and "modified after signing" in out
    unsigned = dict(d)
    unsigned.pop("signature")
    assert _gate(str(_write(tmp_path, "unsigned.json", unsigned)), "--policy", str(pol), "--baseline", str(card))[0] == 0


def test_compare_refuses_a_nan_min_delta(tmp_path: Path):
    card = _write(tmp_path, "card.json", _card_dict())
    r = CliRunner().invoke(main, ["compare", str(card), str(card), "--min-delta", "nan"])
    assert r.exit_code == 2 and "'--min-delta': 'nan' is not a finite number" in r.output


def test_an_unwritable_step_summary_does_not_change_the_verdict(tmp_path: Path, monkeypatch):
    """Found by a probe: a $GITHUB_STEP_SUMMARY that cannot be written replaced the gate's verdict with exit 2."""
    card = _write(tmp_path, "card.json", _card_dict())
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "no-such-dir" / "summary.md"))
    for threshold, code in ((0.5, 0), (0.99, 1)):
        rc, out = _gate(str(card), "--policy", str(_policy(tmp_path, f"rules:\n  - metric: {ACC}\n    op: '>='\n    threshold: {threshold}\n")))
        assert rc == code, out


def test_a_field_added_to_the_signature_block_is_not_verified(tmp_path: Path):
    """Found by a probe: a field added inside the signature block (covered by no signature) verified."""
    card = _write(tmp_path, "card.json", _card_dict())
    assert CliRunner().invoke(main, ["sign", str(card), "--generate-key", str(tmp_path / "k.pem")]).exit_code == 0
    pub = str(tmp_path / "k.pub.pem")
    assert CliRunner().invoke(main, ["verify", str(card), "--public-key", pub]).exit_code == 0
    d = json.loads(card.read_text())
    d["signature"]["approved_by"] = "the audit board"
    forged = _write(tmp_path, "forged.json", d)
    r = CliRunner().invoke(main, ["verify", str(forged), "--public-key", pub])
    assert r.exit_code == 1 and "fields no signature covers ('approved_by')" in r.output, r.output
