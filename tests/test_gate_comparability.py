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
