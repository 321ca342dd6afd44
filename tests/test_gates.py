"""Release gates: policy parsing, rules, exact McNemar, JUnit, markdown, the gate/compare CLI."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from test_report_cards import make_card

from robustlab.cli import main
from robustlab.errors import PolicyError
from robustlab.gates import Outcome, evaluate_policy, load_policy, parse_policy
from robustlab.gates.compare import compare_scorecards, format_comparison
from robustlab.gates.junit import junit_xml
from robustlab.gates.markdown import markdown_summary
from robustlab.gates.mcnemar import exact_mcnemar, paired_mcnemar
from robustlab.scorecard import Verdict

ROBUST = "adversarial/pgd/robust_accuracy"


def _policy(tmp_path: Path, doc: dict, name: str = "policy.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(doc))
    return p


# -- policy parsing -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "doc, fragment",
    [
        ({"rules": [{"metric": "clean/accuracy", "op": ">", "threshold": 0.5}]}, "rules[0].op must be one of >=, <=, got '>'; fix the policy file."),
        ({"rules": [{"metric": "clean/accuracy", "op": ">="}]}, "both 'op'"),
        ({"rules": [{"metric": "clean/accuracy", "op": ">=", "threshold": "high"}]}, "finite number"),
        ({"rules": [{"metric": "clean/accuracy", "threshhold": 0.5}]}, "unknown key"),
        ({"rules": [{"metric": "clean/accuracy"}]}, "tests nothing"),
        ({"rules": [{"op": ">=", "threshold": 0.5}]}, "'metric'"),
        ({"rules": [{"metric": "a", "op": ">=", "threshold": 1, "on": "middle"}]}, "rules[0].on must be one of value, lower, upper, got 'middle'; fix the policy file."),
        ({"rules": [{"metric": "a", "max_drop": -0.1}]}, "max_drop must be >= 0"),
        ({"rules": [{"metric": "a", "mcnemar": {"alpha": 0.05}}]}, "per_sample"),
        ({"rules": [{"metric": "a", "op": ">=", "threshold": 1}, {"metric": "a", "op": ">=", "threshold": 1}]}, "duplicate rule name"),
        ({"audit": {"invalid": "ignore"}, "rules": []}, "audit.invalid must be one of fail, inconclusive, allow, got 'ignore'; fix the policy file."),
        ({"version": 2, "rules": []}, "version"),
        (["not", "a", "mapping"], "mapping"),
    ],
)
def test_invalid_policies_raise_policy_error(doc, fragment):
    with pytest.raises(PolicyError, match=None) as exc:
        parse_policy(doc)
    assert fragment in str(exc.value)


def test_policy_file_errors(tmp_path):
    with pytest.raises(PolicyError, match="does not exist"):
        load_policy(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [\n  - metric: a\n   op: >=")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(bad)


def test_example_policy_in_repo_parses():
    p = Path(__file__).resolve().parents[1] / "reports" / "example-policy.yaml"
    pol = load_policy(p)
    assert pol.rules and any(r.needs_baseline for r in pol.rules) and any(r.op is not None for r in pol.rules)


def test_example_policy_names_what_the_standard_suite_writes():
    """The README's CI example gates `--suite standard` with this policy: every metric, check and flag list it
    names must be one that suite writes (it named a check `pgd` that no shipped suite has, so it always failed)."""
    from robustlab.metric_keys import number
    from robustlab.scorecard import Scorecard

    root = Path(__file__).resolve().parents[1]
    text = (root / "reports" / "example-policy.yaml").read_text()
    card = Scorecard.read(root / "tests" / "golden" / "standard.json")  # the standard suite on digits: primary eps 0.1, not 8/255
    cifar_flag = f"robust/eps_{number(8 / 255)}"
    assert cifar_flag in text
    own_flag = f"robust/eps_{number(card.metrics()['adversarial/autoattack_linf/primary_eps'])}"
    pol = parse_policy(yaml.safe_load(text.replace(cifar_flag, own_flag)))
    rep = evaluate_policy(card, pol, baseline=card)
    for r in rep.results:
        if r.outcome is Outcome.SKIPPED:  # `if_missing: skip`: the CIFAR-100 OOD set, which a digits run has not
            continue
        assert "not in the scorecard" not in r.message and "no per-sample list" not in r.message, (r.name, r.message)
    regress = [r for r in rep.results if r.kind != "threshold" and r.metric]
    assert regress and all(r.details.get("paired") == card.data["n"] for r in regress if "paired" in r.details)


# -- threshold rules ----------------------------------------------------------------------------
def test_pass_and_fail_exit_codes_and_lower_bound():
    card = make_card(n=200, seed=1)
    acc = card.metrics()["clean/accuracy"]
    low = card.intervals()["clean/accuracy"].low
    assert low < acc
    mid = (low + acc) / 2  # the point value passes, the CI lower end does not
    ok = evaluate_policy(card, parse_policy({"rules": [{"metric": "clean/accuracy", "op": ">=", "threshold": mid}]}))
    assert ok.outcome is Outcome.PASS and ok.exit_code == 0
    strict = evaluate_policy(card, parse_policy({"rules": [{"metric": "clean/accuracy", "op": ">=", "threshold": mid, "on": "lower"}]}))
    assert strict.outcome is Outcome.FAIL and strict.exit_code == 1
    assert strict.results[0].observed == pytest.approx(low)
    upper = evaluate_policy(card, parse_policy({"rules": [{"metric": "clean/ece", "op": "<=", "threshold": 0.02}]}))
    assert upper.exit_code == 1
    no_ci = evaluate_policy(card, parse_policy({"rules": [{"metric": "clean/ece", "op": "<=", "threshold": 0.5, "on": "upper"}]}))
    assert no_ci.exit_code == 3 and "no confidence interval" in no_ci.results[0].message


def test_min_samples_and_missing_metric():
    card = make_card(n=50)
    r = evaluate_policy(card, parse_policy({"min_samples": 100, "rules": [{"metric": "clean/accuracy", "op": ">=", "threshold": 0.0}]}))
    assert r.exit_code == 3 and "only 50 samples" in r.results[0].message
    r = evaluate_policy(card, parse_policy({"rules": [{"metric": "clean/accuracy", "op": ">=", "threshold": 0.0, "min_samples": 50}]}))
    assert r.exit_code == 0
    miss = evaluate_policy(card, parse_policy({"rules": [{"metric": "adversarial/autoattack/robust_accuracy", "op": ">=", "threshold": 0.1}]}))
    assert miss.exit_code == 1 and "not in the scorecard" in miss.results[0].message
    skip = evaluate_policy(card, parse_policy({"rules": [{"metric": "nope", "op": ">=", "threshold": 0.1, "if_missing": "skip"}]}))
    assert skip.exit_code == 0 and skip.results[0].outcome is Outcome.SKIPPED


def test_audit_invalid_fails_unless_allowed_and_suspect_policy():
    invalid = make_card(audit_verdict=Verdict.INVALID)
    r = evaluate_policy(invalid, parse_policy({"rules": []}))
    assert r.exit_code == 1
    assert any(x.kind == "audit" and x.outcome is Outcome.FAIL and "gradient_masking" in x.message for x in r.results)
    assert evaluate_policy(invalid, parse_policy({"audit": {"invalid": "allow"}, "rules": []})).exit_code == 0
    suspect = make_card(audit_verdict=Verdict.SUSPECT)
    assert evaluate_policy(suspect, parse_policy({"rules": []})).exit_code == 0
    assert evaluate_policy(suspect, parse_policy({"audit": {"suspect": "inconclusive"}, "rules": []})).exit_code == 3


def test_errored_check_is_inconclusive_by_default():
    from robustlab.scorecard import Status

    card = make_card()
    card.checks[2].status = Status.ERROR
    card.checks[2].reason = "out of memory"
    r = evaluate_policy(card, parse_policy({"rules": []}))
    assert r.exit_code == 3 and "out of memory" in r.results[-1].message
    assert evaluate_policy(card, parse_policy({"checks": {"error": "fail"}, "rules": []})).exit_code == 1


# -- McNemar ------------------------------------------------------------------------------------
@pytest.mark.parametrize("lost,gained", [(0, 0), (5, 0), (7, 2), (2, 7), (30, 18), (100, 80)])
def test_exact_mcnemar_matches_binomial_tail(lost, gained):
    m = lost + gained
    one, two = exact_mcnemar(lost, gained)
    if m == 0:
        assert one == two == 1.0
        return
    tail = sum(math.comb(m, k) for k in range(lost, m + 1)) / 2**m  # independent: exact binomial sum
    assert one == pytest.approx(tail, rel=1e-9)
    k = min(lost, gained)
    two_ref = min(1.0, 2 * sum(math.comb(m, i) for i in range(0, k + 1)) / 2**m)
    assert two == pytest.approx(two_ref, rel=1e-9)


def test_mcnemar_matches_statsmodels_when_available():
    sm = pytest.importorskip("statsmodels.stats.contingency_tables")
    for lost, gained in [(7, 2), (30, 18)]:
        ref = sm.mcnemar([[10, lost], [gained, 10]], exact=True).pvalue
        assert exact_mcnemar(lost, gained)[1] == pytest.approx(ref, rel=1e-9)


def test_paired_mcnemar_pairs_by_id_not_position():
    ids = [f"s{i}" for i in range(6)]
    base = [True, True, False, True, False, True]
    rev_ids, rev_flags = ids[::-1], base[::-1]
    res = paired_mcnemar(rev_ids, rev_flags, ids, base)  # identical flags, shuffled order
    assert (res.lost, res.gained, res.n) == (0, 0, 6)
    cand = [False, True, True, True, False, False]
    res = paired_mcnemar(ids, cand, ids, base)
    assert (res.lost, res.gained, res.n) == (2, 1, 6)
    part = paired_mcnemar(ids[:3] + ["other"], cand[:3] + [True], ids, base)
    assert part.n == 3


# -- regression against a baseline ----------------------------------------------------------------
def _regression_policy(alpha: float = 0.05, max_drop: float = 0.5) -> dict:
    return {"rules": [{"name": "robust accuracy does not regress", "metric": ROBUST, "max_drop": max_drop, "mcnemar": {"per_sample": "robust@eps=0.03137", "check": "pgd", "alpha": alpha}}]}


def test_baseline_comparison_flags_regressed_model():
    rng = np.random.default_rng(0)
    n = 300
    base_flags = list(rng.random(n) < 0.5)
    regressed = [f and rng.random() > 0.3 for f in base_flags]  # ~45 robust points lost, none gained
    base = make_card(n=n, robust_flags=base_flags)
    cand = make_card(n=n, robust_flags=regressed)
    bad = evaluate_policy(cand, parse_policy(_regression_policy()), baseline=base, baseline_source="base.json")
    assert bad.exit_code == 1
    r = bad.results[0]
    assert r.details["lost"] > 20 and r.details["gained"] == 0 and r.details["p_regression"] < 1e-6
    assert "significant regression" in r.message
    same = evaluate_policy(base, parse_policy(_regression_policy()), baseline=base)
    assert same.exit_code == 0
    # max_drop alone: the drop is ~0.15, so a 0.2 tolerance passes, a 0.05 tolerance fails
    only_drop = {"rules": [{"metric": ROBUST, "max_drop": 0.2}]}
    assert evaluate_policy(cand, parse_policy(only_drop), baseline=base).exit_code == 0
    only_drop["rules"][0]["max_drop"] = 0.05
    assert evaluate_policy(cand, parse_policy(only_drop), baseline=base).exit_code == 1


def test_regression_rules_without_baseline_are_inconclusive():
    r = evaluate_policy(make_card(), parse_policy(_regression_policy()))
    assert r.exit_code == 3 and "--baseline" in r.results[0].message


# -- outputs ------------------------------------------------------------------------------------
def test_junit_has_one_case_per_rule_and_names_failed_rule():
    card = make_card()
    pol = parse_policy({"rules": [
        {"name": "clean accuracy", "metric": "clean/accuracy", "op": ">=", "threshold": 0.5},
        {"name": "robust accuracy <br> & co", "metric": ROBUST, "op": ">=", "threshold": 0.99},
    ]})
    rep = evaluate_policy(card, pol)
    root = ET.fromstring(junit_xml(rep, card))
    cases = root.findall(".//testcase")
    assert len(cases) == len(rep.results) == 2 + 2 + 1  # 2 rules, 2 audit cases, checks completed
    failed = [c.get("name") for c in cases if c.find("failure") is not None]
    assert failed == ["robust accuracy <br> & co"]
    suite = root.find("testsuite")
    assert suite is not None and suite.get("failures") == "1"
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["model.sha256"] == card.model["sha256"] and props["outcome"] == "fail"
    md = markdown_summary(rep, card)
    assert "FAIL" in md and "robust accuracy <br> & co" in md and "| outcome |" in md


def test_gate_cli_exit_codes_junit_and_step_summary(tmp_path, monkeypatch):
    card_path = make_card().write(tmp_path / "scorecard.json")
    passing = _policy(tmp_path, {"rules": [{"metric": "clean/accuracy", "op": ">=", "threshold": 0.5}]}, "pass.yaml")
    failing = _policy(tmp_path, {"rules": [{"name": "robust floor", "metric": ROBUST, "op": ">=", "threshold": 0.95}]}, "fail.yaml")
    few = _policy(tmp_path, {"min_samples": 10000, "rules": [{"metric": "clean/accuracy", "op": ">=", "threshold": 0.5}]}, "few.yaml")
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    runner = CliRunner()
    res = runner.invoke(main, ["gate", str(card_path), "--policy", str(passing), "--junit", str(tmp_path / "p.xml")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(main, ["gate", str(card_path), "--policy", str(failing), "--junit", str(tmp_path / "f.xml")])
    assert res.exit_code == 1
    failed = [c.get("name") for c in ET.parse(tmp_path / "f.xml").getroot().iter("testcase") if c.find("failure") is not None]
    assert failed == ["robust floor"]
    assert runner.invoke(main, ["gate", str(card_path), "--policy", str(few)]).exit_code == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - metric: clean/accuracy\n    op: '=='\n    threshold: 1\n")
    res = runner.invoke(main, ["gate", str(card_path), "--policy", str(bad)])
    assert res.exit_code == 2 and "error:" in res.output
    assert runner.invoke(main, ["gate", str(tmp_path / "nope.json"), "--policy", str(passing)]).exit_code == 2
    text = summary.read_text()
    assert text.count("## robustlab release gate") == 3  # appended by the three completed gates


def test_gate_cli_with_baseline_file(tmp_path):
    rng = np.random.default_rng(1)
    base_flags = list(rng.random(300) < 0.6)
    base = make_card(n=300, robust_flags=base_flags).write(tmp_path / "base.json")
    cand = make_card(n=300, robust_flags=[f and rng.random() > 0.4 for f in base_flags]).write(tmp_path / "cand.json")
    pol = _policy(tmp_path, _regression_policy())
    runner = CliRunner()
    assert runner.invoke(main, ["gate", str(cand), "--policy", str(pol), "--baseline", str(base)]).exit_code == 1
    assert runner.invoke(main, ["gate", str(base), "--policy", str(pol), "--baseline", str(base)]).exit_code == 0
    assert runner.invoke(main, ["gate", str(cand), "--policy", str(pol), "--baseline", str(tmp_path / "nope")]).exit_code == 2


def test_compare_reports_moved_metrics(tmp_path):
    rng = np.random.default_rng(2)
    flags = list(rng.random(200) < 0.5)
    a = make_card(n=200, robust_flags=flags)
    b = make_card(n=200, robust_flags=[False] * 200, sha256="12" * 32)
    cmp = compare_scorecards(a, b)
    moved = {m.key: m for m in cmp.moved(min_abs=0.01)}
    assert ROBUST in moved and moved[ROBUST].delta == pytest.approx(-sum(flags) / 200)
    assert moved[ROBUST].disjoint
    assert "clean/accuracy" not in moved
    assert cmp.provenance["model.sha256"] == ("ab" * 32, "12" * 32)
    fl = {f.name: f.result for f in cmp.flags}
    assert fl["pgd/robust/eps_0.03137"].lost == sum(flags) and fl["pgd/robust/eps_0.03137"].gained == 0
    text = format_comparison(cmp, min_abs=0.01)
    assert ROBUST in text and "model.sha256" in text
    pa, pb = a.write(tmp_path / "a.json"), b.write(tmp_path / "b.json")
    res = CliRunner().invoke(main, ["compare", str(pa), str(pb), "--markdown"])
    assert res.exit_code == 0 and ROBUST in res.output and "| metric |" in res.output


def test_policy_choices_ignore_case_but_operators_do_not():
    """Policy words are read case-insensitively (as before the move to parsing.parse_enum); operators exactly."""
    p = parse_policy({"audit": {"invalid": " INCONCLUSIVE", "suspect": "Fail"}, "rules": [{"metric": "a", "op": ">=", "threshold": 1, "on": "Lower", "if_missing": "SKIP"}]})
    assert (p.audit_invalid.value, p.audit_suspect.value) == ("inconclusive", "fail")
    assert (p.rules[0].on.value, p.rules[0].if_missing.value) == ("lower", "skip")
    with pytest.raises(PolicyError, match=r"op must be one of"):
        parse_policy({"rules": [{"metric": "a", "op": "=>", "threshold": 1}]})
