"""Issue 13, part 3: a gate never passes an incomplete run (killed, interrupted, checks missing)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from test_report_cards import make_card

from robustlab.cli import main
from robustlab.gates import Outcome, evaluate_policy, parse_policy

SKIP_POLICY = {"rules": [
    {"name": "clean", "metric": "clean/accuracy", "op": ">=", "threshold": 0.5, "if_missing": "skip"},
    {"name": "robust", "metric": "adversarial/pgd/robust_accuracy", "op": ">=", "threshold": 0.1, "if_missing": "skip"},
]}


def _killed_after_first_check():
    """What the runner leaves on disk when killed after its first check: the suite lists every check,
    the scorecard holds one, and run.complete / run.finished were never written."""
    card = make_card()
    card.checks = card.checks[:1]
    card.run.pop("complete")
    card.run.pop("finished")
    return card


def test_gate_on_killed_run_is_inconclusive_even_with_if_missing_skip():
    rep = evaluate_policy(_killed_after_first_check(), parse_policy(SKIP_POLICY))
    assert rep.outcome is Outcome.INCONCLUSIVE and rep.exit_code == 3
    r = next(r for r in rep.results if r.name == "all checks completed")
    assert "pgd" in r.message and "absent" in r.message
    assert evaluate_policy(make_card(), parse_policy(SKIP_POLICY)).exit_code == 0  # the complete run passes


@pytest.mark.parametrize("edit", ["complete_false", "check_missing", "no_suite_list"])
def test_each_sign_of_an_incomplete_run(edit):
    card = make_card()
    if edit == "complete_false":
        card.run["complete"] = False
    elif edit == "check_missing":
        card.checks = [c for c in card.checks if c.id != "ood"]
    else:
        card.suite.pop("checks")
    assert evaluate_policy(card, parse_policy(SKIP_POLICY)).exit_code == 3


def test_policy_can_say_otherwise_explicitly():
    card = _killed_after_first_check()
    assert evaluate_policy(card, parse_policy({**SKIP_POLICY, "checks": {"incomplete": "fail"}})).exit_code == 1
    assert evaluate_policy(card, parse_policy({**SKIP_POLICY, "checks": {"incomplete": "allow"}})).exit_code == 0


def test_gate_cli_on_killed_run_exits_3(tmp_path):
    path = _killed_after_first_check().write(tmp_path / "scorecard.json")
    pol = tmp_path / "policy.yaml"
    pol.write_text(json.dumps(SKIP_POLICY))
    r = CliRunner().invoke(main, ["gate", str(path), "--policy", str(pol)])
    assert r.exit_code == 3, r.output
    assert "incomplete run" in r.output
