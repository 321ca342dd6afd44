"""A regression rule holds a candidate against its baseline only when the two measured the same thing.

Other images (``data.content_sha256``), other numerics (precision, compile, channels-last) or another
protocol of the rule's check make the drop and the McNemar pairing meaningless: the rule is
inconclusive (exit 3) and says why, never a pass. Found by a probe: two npz files with the same base
name share sample ids, so McNemar "paired" 40 different digits and passed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from test_report_cards import make_card

from robustlab.cli import main
from robustlab.gates import Outcome, evaluate_policy, parse_policy

ROBUST = "adversarial/pgd/robust_accuracy"
POLICY = {"rules": [{"metric": ROBUST, "max_drop": 0.5, "mcnemar": {"per_sample": "robust@eps=0.03137", "check": "pgd"}}]}


def _cards(**changes: object):
    base = make_card(n=200)
    cand = make_card(n=200)
    for c in (base, cand):
        c.data["content_sha256"] = "11" * 32
    for where, value in changes.items():
        section, key = where.split("__")
        getattr(cand, section)[key] = value
    return base, cand


def test_same_data_and_settings_are_compared():
    base, cand = _cards()
    r = evaluate_policy(cand, parse_policy(POLICY), baseline=base).results[0]
    assert r.outcome is Outcome.PASS and r.details["paired"] == 200


@pytest.mark.parametrize("change, says", [
    ({"data__content_sha256": "22" * 32}, "other images"),
    ({"run__precision": "bf16"}, "run.precision: baseline fp32 vs bf16"),
    ({"run__channels_last": True}, "run.channels_last"),
])
def test_other_images_or_numerics_are_inconclusive(change, says):
    base, cand = _cards(**change)
    rep = evaluate_policy(cand, parse_policy(POLICY), baseline=base)
    r = rep.results[0]
    assert r.outcome is Outcome.INCONCLUSIVE and rep.exit_code == 3
    assert says in r.message and "same data with the same settings" in r.message
    assert "paired" not in r.details and r.details["baseline_mismatches"]


def test_a_protocol_only_matters_for_its_own_check():
    base, cand = _cards()
    for c, proto in ((base, "imagenet-c"), (cand, "cifar-c")):
        next(x for x in c.checks if x.id == "corruptions").params["protocol"] = proto
    pol = parse_policy({"rules": [{"metric": ROBUST, "max_drop": 0.5}, {"metric": "corruption/mce", "max_drop": 0.5, "higher_is_better": False}]})
    assert "corruption/mce" in cand.metrics()
    adv, cor = evaluate_policy(cand, pol, baseline=base).results[:2]
    assert adv.outcome is Outcome.PASS
    assert cor.outcome is Outcome.INCONCLUSIVE and "corruptions.protocol: baseline imagenet-c vs cifar-c" in cor.message


def test_cli_mcnemar_on_two_files_with_the_same_name_is_inconclusive(tmp_path: Path):
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = (d.images / 16.0).astype("float32")[:, None], d.target
    for sub, rows in (("a", slice(0, 40)), ("b", slice(1000, 1040))):
        (tmp_path / sub).mkdir()
        np.savez(tmp_path / sub / "test.npz", x=x[rows], y=y[rows], dataset="digits")
    suite = tmp_path / "clean.yaml"
    suite.write_text("name: cleanonly\nchecks:\n  - check: clean\n")
    pol = tmp_path / "pol.yaml"
    pol.write_text(yaml.safe_dump({"rules": [{"metric": "clean/accuracy", "mcnemar": {"per_sample": "correct", "check": "clean"}}]}))
    runner = CliRunner()
    for sub in ("a", "b"):
        res = runner.invoke(main, ["evaluate", "--model", "zoo:digits-cnn", "--data", f"npz:{tmp_path / sub / 'test.npz'}", "--suite", str(suite),
                                   "--no-mlflow", "--no-report", "--out", str(tmp_path / f"run_{sub}")])
        assert res.exit_code == 0, res.output
    card_a, card_b = (str(tmp_path / f"run_{s}" / "scorecard.json") for s in ("a", "b"))
    res = runner.invoke(main, ["gate", card_b, "--policy", str(pol), "--baseline", card_a])
    assert res.exit_code == 3, res.output
    assert "other images" in res.output
    assert runner.invoke(main, ["gate", card_a, "--policy", str(pol), "--baseline", card_a]).exit_code == 0


def _pgd(card):
    return next(c for c in card.checks if c.id == "pgd")


def test_other_parameters_of_the_rules_check_are_inconclusive():
    """A baseline made with another budget or step count measured something else: found by a probe, a suite
    whose PGD ran 1 step at eps 0.001 'did not regress' against a baseline at 10 steps and eps 0.1."""
    base, cand = _cards()
    _pgd(base).params.update(steps=10, epsilons=[0.03137])
    _pgd(cand).params.update(steps=1, epsilons=[0.001])
    r = evaluate_policy(cand, parse_policy(POLICY), baseline=base).results[0]
    assert r.outcome is Outcome.INCONCLUSIVE
    assert "pgd.steps: baseline 10 vs 1" in r.message and "pgd.epsilons" in r.message


def test_another_primary_budget_is_inconclusive():
    base, cand = _cards()
    _pgd(base).metrics["adversarial/pgd/primary_eps"] = 0.1
    _pgd(cand).metrics["adversarial/pgd/primary_eps"] = 0.001
    r = evaluate_policy(cand, parse_policy(POLICY), baseline=base).results[0]
    assert r.outcome is Outcome.INCONCLUSIVE and "pgd primary budget: baseline [0.1] vs [0.001]" in r.message


def test_presentation_parameters_and_other_checks_do_not_matter():
    base, cand = _cards()
    _pgd(base).params.update(audit_samples=32, per_sample=True)
    _pgd(cand).params.update(audit_samples=64, per_sample=False)
    next(c for c in cand.checks if c.id == "corruptions").params["severities"] = [1]  # not the rule's check
    r = evaluate_policy(cand, parse_policy(POLICY), baseline=base).results[0]
    assert r.outcome is Outcome.PASS, r.message


def test_without_content_hashes_the_ids_and_sizes_decide():
    """A baseline whose content hash was removed is not compared as if the images were the same."""
    base, cand = _cards()
    del base.data["content_sha256"]
    assert evaluate_policy(cand, parse_policy(POLICY), baseline=base).results[0].outcome is Outcome.PASS  # same ids and n
    small = make_card(n=64)
    r = evaluate_policy(cand, parse_policy(POLICY), baseline=small).results[0]
    assert r.outcome is Outcome.INCONCLUSIVE and "data.n: baseline 64 vs 200" in r.message
    for c in (base, cand):
        c.data.pop("content_sha256", None)
        c.data.pop("ids")
    r = evaluate_policy(cand, parse_policy({"rules": [{"metric": ROBUST, "max_drop": 0.5}]}), baseline=base).results[0]
    assert r.outcome is Outcome.INCONCLUSIVE and "cannot be confirmed to be the same" in r.message
