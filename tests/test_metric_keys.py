"""The metric-key grammar (issue 15, part B): one grammar everywhere, MLflow-legal as is, schema 2.0
with a reader for 1.x scorecards, policies and baselines."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from robustlab.metric_keys import (
    MetricKeyError, at_radius, child, class_segment, eps_segment, illegal_keys, is_legal_key, key, legal_segment, matches, parse,
    pattern, severity_segment, sigma_segment, upgrade_v1_key,
)
from robustlab.scorecard import SCHEMA_VERSION, Scorecard

GOLDEN = Path(__file__).parent / "golden"
DIGITS = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _all_keys(card: Scorecard) -> tuple[list[str], list[str]]:
    """(metric-like keys, definition patterns) of every check: metrics, intervals, counts, per-sample and series names."""
    keys: list[str] = []
    pats: list[str] = []
    for c in card.checks:
        keys += [*c.metrics, *c.intervals, *c.counts, *c.series]
        keys += [f"{c.id}/{n}" if "/" not in n else n for n in c.per_sample]
        pats += list(c.definitions)
    return keys, pats


# -- building and parsing ------------------------------------------------------------------------
def test_round_trip_build_then_parse():
    k = key("adversarial", "pgd_linf", eps_segment(8 / 255), class_segment(3), "robust_accuracy")
    assert k == "adversarial/pgd_linf/eps_0.03137/class_3/robust_accuracy"
    p = parse(k)
    assert (p.head, p.metric, p.eps, p.class_index, p.parent) == ("adversarial", "robust_accuracy", pytest.approx(0.03137), 3, "adversarial/pgd_linf/eps_0.03137/class_3")
    c = child(key("certify", sigma_segment(0.25)), at_radius("certified_accuracy", 0.5))
    assert c == "certify/sigma_0.25/certified_accuracy_at_r_0.5"
    pc = parse(c)
    assert (pc.sigma, pc.radius, pc.measure) == (0.25, 0.5, "certified_accuracy")
    ps = parse(key("corruption", "fog", severity_segment(3), "accuracy"))
    assert ps.severity == 3 and ps.class_index is None
    assert parse("adversarial/aa/eps_0.1/after_apgd-ce/robust_accuracy").after == "apgd-ce"
    for bad in ("a/b", "", "x=1", "fpr@95", ".."):
        with pytest.raises(MetricKeyError):
            key("ood", bad)
    with pytest.raises(MetricKeyError):
        key("x" * 300)
    assert pattern("corruption", "*", "s*", "accuracy") == "corruption/*/s*/accuracy"
    assert matches("ood/energy/near/auroc", "ood/*/near/auroc") and not matches("ood/energy/svhn/x/auroc", "ood/*/near/auroc")


def test_upgrade_v1_key_covers_every_1x_form_and_is_the_identity_on_2x():
    cases = {
        "adversarial/pgd/eps=0.03137/robust_accuracy": "adversarial/pgd/eps_0.03137/robust_accuracy",
        "adversarial/aa/eps=0.1/after=apgd-t/robust_accuracy": "adversarial/aa/eps_0.1/after_apgd-t/robust_accuracy",
        "clean/class=cat/accuracy": "clean/class_3/accuracy",
        "clean/class=unknown name/accuracy": "clean/class_unknown name/accuracy",
        "ood/energy/cifar100/fpr@95tpr": "ood/energy/cifar100/fpr_at_95tpr",
        "certify/sigma=0.25/certified_accuracy@r=0.5": "certify/sigma_0.25/certified_accuracy_at_r_0.5",
        "certify/sigma=0.25/interval@r=0.25/lower": "certify/sigma_0.25/interval_at_r_0.25/lower",
        "robust@eps=0.1": "robust/eps_0.1",  # per-sample names, as the adversarial checks write them
        "corruption/<name>/s<k>/accuracy": "corruption/*/s*/accuracy",
        "adversarial/pgd/eps=*/robust_accuracy": "adversarial/pgd/eps_*/robust_accuracy",
    }
    for old, new in cases.items():
        assert upgrade_v1_key(old, CIFAR) == new
        assert upgrade_v1_key(new, CIFAR) == new
    assert is_legal_key(upgrade_v1_key("ood/e/npz:/a b/c.npz#x/auroc"))


def test_legal_segment_makes_user_names_legal():
    for text in ("npz:/a/b.npz", "my set@x=1", "..", " ", "naïve", "a\x00b"):
        assert is_legal_key(legal_segment(text))


@pytest.mark.parametrize("name", ["quick", "standard", "cifar"])
def test_every_key_of_the_golden_scorecards_is_legal_once_read(name):
    """quick and cifar are stored in schema 1.0 (standard was regenerated in 2.0 when the uncertainty
    check joined the suite): read, every key is in the 2.0 grammar and MLflow-legal."""
    from mlflow.utils.validation import _validate_metric_name

    raw = json.loads((GOLDEN / f"{name}.json").read_text())
    assert raw["schema_version"].startswith("2." if name == "standard" else "1.")
    card = Scorecard.read(GOLDEN / f"{name}.json")
    keys, pats = _all_keys(card)
    assert illegal_keys(keys) == [] and illegal_keys(pats, patterns=True) == []
    for k in card.metrics():
        _validate_metric_name(k)
    # nothing lost: as many keys as in the file, and the same numbers under the upgraded keys
    names = raw["model"]["class_names"]
    assert len(card.metrics()) == sum(len(c["metrics"]) for c in raw["checks"])
    for c in raw["checks"]:
        for k, v in c["metrics"].items():
            got = card.metrics()[upgrade_v1_key(k, names)]
            assert (v is None and got != got) or got == v
    assert card.schema_version == SCHEMA_VERSION == "2.0"


def test_reading_a_1x_card_does_not_modify_the_dict():
    raw = json.loads((GOLDEN / "quick.json").read_text())
    before = json.dumps(raw, sort_keys=True)
    card = Scorecard.from_dict(raw)
    assert json.dumps(raw, sort_keys=True) == before
    assert "clean/class_3/accuracy" in card.metrics() and "clean/class=3/accuracy" in raw["checks"][0]["metrics"]


def test_a_newer_major_schema_is_refused_in_one_line(tmp_path):
    from robustlab.errors import RobustlabError

    raw = json.loads((GOLDEN / "quick.json").read_text())
    raw["schema_version"] = "3.0"
    p = tmp_path / "s.json"
    p.write_text(json.dumps(raw))
    with pytest.raises(RobustlabError, match="schema_version '3.0'"):
        Scorecard.read(p)


# -- consumers ------------------------------------------------------------------------------------
def test_signed_1x_scorecard_verifies_reports_and_gates(tmp_path):
    """A 1.x scorecard signed by the 1.x code path verifies (over the bytes as signed), renders and
    gates; tampering is still detected."""
    from click.testing import CliRunner

    from robustlab.cli import main
    from robustlab.signing import SignatureState, generate_key, sign_scorecard, verify_scorecard

    card_path = tmp_path / "scorecard.json"
    shutil.copy(GOLDEN / "quick.json", card_path)
    priv, pub = generate_key(tmp_path / "k.pem")
    sign_scorecard(card_path, priv)
    assert json.loads(card_path.read_text())["schema_version"] == "1.0"  # signing does not upgrade the file
    assert verify_scorecard(card_path, public_key=pub).state is SignatureState.VALID_TRUSTED
    r = CliRunner().invoke(main, ["verify", str(card_path), "--public-key", str(pub)])
    assert r.exit_code == 0, r.output
    out = tmp_path / "report.html"
    r = CliRunner().invoke(main, ["report", str(card_path), "--output", str(out), "--public-key", str(pub)])
    assert r.exit_code == 0, r.output
    html = out.read_text()
    assert "clean/class_3 [3]/accuracy" in html and "class=3" not in html
    policy = tmp_path / "p.yaml"
    policy.write_text(yaml.safe_dump({"rules": [
        {"name": "class 7", "metric": "clean/class=7/accuracy", "op": ">=", "threshold": 0.5},
        {"name": "robust", "metric": "adversarial/pgd_linf/eps=0.1/robust_accuracy", "op": ">=", "threshold": 0.0},
    ]}))
    r = CliRunner().invoke(main, ["gate", str(card_path), "--policy", str(policy)])
    assert r.exit_code == 0, r.output
    tampered = json.loads(card_path.read_text())
    tampered["checks"][0]["metrics"]["clean/accuracy"] = 1.0
    card_path.write_text(json.dumps(tampered))
    assert verify_scorecard(card_path, public_key=pub).state is SignatureState.INVALID


def _as_v2_file(src: Path, dst: Path) -> dict:
    """A 2.0 scorecard file: what the 2.0 producers write for the same run."""
    d = Scorecard.read(src).to_dict()
    dst.write_text(json.dumps(d))
    return d


def test_1x_policy_and_1x_baseline_gate_a_2x_scorecard(tmp_path):
    from robustlab.gates.rules import Outcome, evaluate_policy
    from robustlab.gates.policy import parse_policy

    v2 = tmp_path / "v2.json"
    _as_v2_file(GOLDEN / "cifar.json", v2)
    card = Scorecard.read(v2)
    assert "clean/class_3/accuracy" in card.metrics()
    cat = card.metrics()["clean/class_3/accuracy"]
    pol = parse_policy({"rules": [
        {"name": "cat", "metric": "clean/class=cat/accuracy", "op": ">=", "threshold": cat},
        {"name": "cat too high", "metric": "clean/class=cat/accuracy", "op": ">=", "threshold": cat + 0.01},
        {"name": "pgd", "metric": "adversarial/pgd_linf/eps=0.03137/robust_accuracy", "max_drop": 0.0,
         "mcnemar": {"per_sample": "robust@eps=0.03137", "check": "pgd_linf"}},
        {"name": "cert", "metric": "certify/sigma=0.25/certified_accuracy@r=0.25", "op": ">=", "threshold": 0.0},
    ]})
    base = Scorecard.read(GOLDEN / "cifar.json")  # 1.x baseline
    rep = evaluate_policy(card, pol, baseline=base)
    got = {r.name: r.outcome for r in rep.results}
    assert got["cat"] is Outcome.PASS and got["cat too high"] is Outcome.FAIL
    assert got["pgd"] is Outcome.PASS and got["cert"] is Outcome.PASS
    # and the reverse: a 2.0 policy on the 1.x card
    pol2 = parse_policy({"rules": [{"name": "cat", "metric": "clean/class_3/accuracy", "op": ">=", "threshold": cat}]})
    assert evaluate_policy(base, pol2).results[0].outcome is Outcome.PASS


def test_gate_maps_keys_of_a_card_whose_producer_still_writes_1x_keys():
    """Until every producer is switched, an in-memory card can hold 1.x keys; a 2.0 policy gates it."""
    from test_report_cards import make_card

    from robustlab.gates.rules import Outcome, evaluate_policy
    from robustlab.gates.policy import parse_policy

    card = make_card(n=300)
    pol = parse_policy({"rules": [{"name": "r", "metric": "adversarial/pgd/eps_0.03137/robust_accuracy", "op": ">=", "threshold": 0.0},
                                  {"name": "c", "metric": "ood/energy/cifar100/fpr_at_95tpr", "op": "<=", "threshold": 1.0}]})
    assert [r.outcome for r in evaluate_policy(card, pol).results[:2]] == [Outcome.PASS, Outcome.PASS]


def test_report_names_classes_beside_class_indices():
    from robustlab.report.render import render_report

    card = Scorecard.read(GOLDEN / "cifar.json")
    html = render_report(card)
    assert "clean/class_3 [cat]/accuracy" in html
    assert not [t for t in ("class=cat", "eps=0.03137/", "certified_accuracy@r", "sigma=0.25/") if t in html]


def test_certify_table_and_summary_read_2x_keys():
    from robustlab.commands.certify import certify_table
    from robustlab.commands.summary import headline_keys

    card = Scorecard.read(GOLDEN / "cifar.json")
    table = certify_table(card)
    # the same table the 1.x code printed for this file (checked against it before the switch)
    assert "sigma    r=0  r=0.25  r=0.5  r=0.75    r=1  r=1.5    r=2    ACR  abstain  PREDICT acc" in table
    assert " 0.25  0.062   0.000  0.000   0.000  0.000  0.000  0.000  0.001    0.312        0.062" in table
    assert " 0.25    0.25  0.000  0.125  0.125" in table
    cert = next(c for c in card.checks if c.check == "certify")
    heads = headline_keys(cert)
    assert "certify/sigma_0.25/certified_accuracy_at_r_0.5" in heads and "certify/sigma_0.25/abstention_rate" in heads
    clean = next(c for c in card.checks if c.check == "clean")
    assert headline_keys(clean) == ["clean/accuracy", "clean/ece", "clean/worst_class_accuracy"]


def test_defend_comparison_headlines_leave_out_per_class_and_per_severity_keys():
    from robustlab.pipelines.defend_comparison import headline_keys

    card = Scorecard.read(GOLDEN / "standard.json")
    keys = headline_keys(card, max_per_check=100)
    assert keys and not [k for k in keys if parse(k).class_index is not None or parse(k).severity is not None]
    assert "corruption/mean_accuracy" in keys


def test_untested_reads_budgets_from_2x_keys():
    from robustlab.report.untested import not_tested

    from robustlab.metric_keys import upgrade_v1_check

    raw = json.loads((GOLDEN / "quick.json").read_text())
    raw["checks"] = [upgrade_v1_check(c, raw["model"]["class_names"]) for c in raw["checks"]]  # as the 2.0 producers write it
    raw["schema_version"] = "2.0"
    card = Scorecard.from_dict(raw)
    card.data["spec"] = "cifar10"  # quick's largest eps 0.2 is above 8/255: nothing to say
    card.data["dataset"] = "cifar10"  # the recorded name decides (it says digits in the golden)
    assert not [s for s in not_tested(card) if "largest L-infinity epsilon" in s]
    adv = next(c for c in card.checks if c.check == "pgd")
    adv.metrics = {k: v for k, v in adv.metrics.items() if parse(k).eps is None or parse(k).eps < 0.03}
    assert [s for s in not_tested(card) if "largest L-infinity epsilon tested (0.025)" in s]


def test_suite_ids_must_fit_in_a_key():
    from robustlab.errors import SuiteError
    from robustlab.suite import parse_suite

    with pytest.raises(SuiteError, match="cannot be part of a metric key"):
        parse_suite("checks:\n  - {check: clean, id: 'a/b'}\n")
    with pytest.raises(SuiteError, match="cannot be part of a metric key"):
        parse_suite("checks:\n  - {check: clean, id: 'x=1'}\n")
    assert parse_suite("checks:\n  - {check: clean, id: clean-2}\n").entries[0].id == "clean-2"


def test_ood_set_names_from_users_are_legal_segments():
    from robustlab.ood.sources import set_name

    for spec in ("my set@x=npz:/a/b.npz", "npz:/data/ood sets/c#1.npz", "noise:gaussian"):
        assert is_legal_key(set_name(spec)), spec


# -- real runs ------------------------------------------------------------------------------------
SUITE_OWN = """name: keys
checks:
  - check: clean
  - check: corruption
    params: {corruptions: [gaussian_noise, contrast], severities: [1, 3]}
  - check: ood
    id: ood-b
    params: {detectors: [msp, energy], near: ['near set@1=noise:uniform'], far: ['noise:gaussian'], shift: [], synthetic_n: 64}
  - check: certify
    params: {sigmas: [0.25], n0: 8, n: 32, alpha: 0.05, num_points: 8, predict_n: 0, interval_radii: [0.25], attack_steps: 1, attack_samples: 2, attack_n: 16}
"""


@pytest.mark.slow
def test_evaluate_logs_exactly_the_scorecard_keys_to_mlflow(tmp_path):
    """A real ``robustlab evaluate`` with the embedded SQLite store: the MLflow run's metric names are
    the scorecard file's keys, unchanged, and every key the owned producers write is legal as written."""
    from mlflow.tracking import MlflowClient

    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE_OWN)
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "robustlab", "evaluate", "--model", "zoo:digits-cnn", "--suite", str(suite), "--limit", "64",
                        "--out", str(out), "--seed", "0", "--quiet", "--no-report", "--device", "cpu"], capture_output=True, text=True, timeout=600,
                       env={**__import__("os").environ, "MLFLOW_TRACKING_URI": ""})
    assert r.returncode == 0, r.stderr[-2000:]
    raw = json.loads((out / "scorecard.json").read_text())
    assert raw["schema_version"] == "2.0"
    assert all(c["status"] == "ok" for c in raw["checks"]), [c["reason"] for c in raw["checks"]]
    raw_keys = [k for c in raw["checks"] for f in ("metrics", "intervals", "counts", "series") for k in c[f]]
    raw_keys += [k for c in raw["checks"] for k in c["per_sample"]]
    assert illegal_keys(raw_keys) == []
    assert illegal_keys([k for c in raw["checks"] for k in c["definitions"]], patterns=True) == []
    assert any(k.startswith("ood/ood-b/msp/near set_1/") for k in raw_keys)
    assert any(k.startswith("certify/sigma_0.25/certified_accuracy_at_r_") for k in raw_keys)
    uri = f"sqlite:///{(out / 'mlflow.db').resolve()}"
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("robustlab").experiment_id])
    assert len(runs) == 1
    logged = set(runs[0].data.metrics)
    finite = {k for c in raw["checks"] for k, v in c["metrics"].items() if v is not None}
    assert logged == finite
    assert "mlflow_keys.json" not in [a.path for a in client.list_artifacts(runs[0].info.run_id)]
