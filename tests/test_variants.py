"""evaluate --variants: one scorecard per variant with the same samples, a comparison against the
base (intervals, McNemar, size, sparsity, latency), the report's variants section, and gate rules
relative to the base (lower confidence bound)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from robustlab.gates import load_policy
from robustlab.gates.policy import parse_policy
from robustlab.gates.rules import Outcome, evaluate_policy
from robustlab.errors import PolicyError
from robustlab.models import LoadOptions
from robustlab.pipelines.evaluate import RunConfig
from robustlab.pipelines.variants import VariantOptions, evaluate_variants
from robustlab.scorecard import CheckResult, Interval, Scorecard, Status
from robustlab.suite import load_suite

SUITE = Path(__file__).parent / "suites" / "variants.yaml"


@pytest.fixture(scope="module")
def variant_run(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("variants")
    cfg = RunConfig(model_spec="zoo:digits-cnn", load=LoadOptions(), suite=load_suite(str(SUITE)), out_dir=out, limit=16, quiet=True, batch_size=16)
    base, runs, cmp = evaluate_variants(cfg, ["fp16", "int8-static", "prune-structured:0.3"], VariantOptions(attack_steps=3, square_queries=20, latency_batch=8))
    return out, base, {r.name: r for r in runs}, cmp


@pytest.mark.slow  # shares a 30 s fixture: base + 3 variants evaluated
def test_one_scorecard_per_variant_on_the_same_samples(variant_run) -> None:
    out, base, runs, _ = variant_run
    assert set(runs) == {"fp16", "int8-static", "prune-structured_0.3"}
    for r in runs.values():
        card = Scorecard.read(out / r.name / "scorecard.json")
        assert card.data["ids"] == base.card.data["ids"] and card.run["seed"] == base.card.run["seed"]
        assert card.suite["sha256"] == base.card.suite["sha256"]
        assert card.model["extra"]["compression"]["base_sha256"] == base.card.model["sha256"]
        assert {c.id for c in card.checks} >= {"clean", "pgd_linf", "corruption", "ood"}
        assert all(c.status is Status.OK for c in card.checks), [(c.id, c.reason) for c in card.checks]


@pytest.mark.slow  # shares a 30 s fixture: base + 3 variants evaluated
def test_integer_attack_runs_on_quantized_variants_only(variant_run) -> None:
    out, _, runs, _ = variant_run
    q = Scorecard.read(out / "int8-static" / "scorecard.json").check("integer_attack")
    assert q is not None and q.status is Status.OK
    assert {"whitebox", "exact", "transfer", "square", "suite_pgd_linf", "worst"} <= {k.split("/")[3] for k in q.metrics}
    suite_flags = Scorecard.read(out / "int8-static" / "scorecard.json").check("pgd_linf").per_sample["robust/eps_0.1"]
    assert q.per_sample["robust_suite_pgd_linf/eps_0.1"] == suite_flags
    worst = q.per_sample["robust/eps_0.1"]
    assert all(not w or (s and all(q.per_sample[f"robust_{way}/eps_0.1"][i] for way in ("whitebox", "exact", "transfer", "square"))) for i, (w, s) in enumerate(zip(worst, suite_flags)))
    assert any(a.name == "gradient_masking_by_quantization" for a in q.audit)
    assert Scorecard.read(out / "fp16" / "scorecard.json").check("integer_attack") is None


@pytest.mark.slow  # shares a 30 s fixture: base + 3 variants evaluated
def test_comparison_holds_intervals_mcnemar_and_measurements(variant_run) -> None:
    out, base, runs, cmp = variant_run
    on_disk = json.loads((out / "variants.json").read_text())
    assert on_disk["variants"][0]["name"] == "fp16"
    by = {v["name"]: v for v in on_disk["variants"]}
    row = next(m for m in by["int8-static"]["metrics"] if m["metric"] == "clean/accuracy")
    assert row["base"] == base.card.metrics()["clean/accuracy"] and len(row["base_ci"]) == 2 and len(row["variant_ci"]) == 2
    assert any(f["flags"] == "pgd_linf/robust/eps_0.1" and f["n"] == 16 for f in by["int8-static"]["mcnemar_vs_base"])
    assert by["int8-static"]["deployed_bytes"] < on_disk["base"]["deployed_bytes"] / 2  # int8 weights
    assert by["fp16"]["file_bytes"] < on_disk["base"]["file_bytes"] * 0.6
    assert by["prune-structured_0.3"]["weight_sparsity"] > on_disk["base"]["weight_sparsity"]
    assert all(isinstance(v["cpu_latency_ms_per_image"], float) for v in [on_disk["base"], *on_disk["variants"]])
    assert Scorecard.read(out / "base" / "scorecard.json").run["variants"]["variants"][1]["name"] == "int8-static"


@pytest.mark.slow  # shares a 30 s fixture: base + 3 variants evaluated
def test_report_has_a_variants_section(variant_run) -> None:
    from robustlab.report.render import render_report

    out, _, _, _ = variant_run
    html = render_report(Scorecard.read(out / "base" / "scorecard.json"))
    assert 'id="variants"' in html and "int8-static" in html and "prune-structured_0.3" in html


def _card(value: float, low: float, high: float) -> Scorecard:
    c = CheckResult("pgd", "pgd")
    c.add_metric("adversarial/pgd/robust_accuracy", value, interval=Interval(low, high), n=500)
    return Scorecard({}, {}, {"n": 500, "ids_sha256": "ab" * 32}, {"checks": ["pgd"]}, {}, {"complete": True}, checks=[c])  # the same 500 images


def test_gate_relative_to_the_base_on_the_lower_confidence_bound() -> None:
    rule = {"metric": "adversarial/pgd/robust_accuracy", "max_drop": 0.02, "drop_on": "lower", "name": "int8 loses at most 2 points (lower bound)"}
    policy = parse_policy({"version": 1, "rules": [rule]})
    base = _card(0.60, 0.56, 0.64)
    close = evaluate_policy(_card(0.60, 0.59, 0.61), policy, baseline=base)
    wide = evaluate_policy(_card(0.60, 0.55, 0.65), policy, baseline=base)  # same value, but the lower bound is 5 points down
    assert close.results[0].outcome is Outcome.PASS
    assert wide.results[0].outcome is Outcome.FAIL and "lower end" in wide.results[0].message
    plain = parse_policy({"version": 1, "rules": [{**rule, "drop_on": "value"}]})
    assert evaluate_policy(_card(0.60, 0.55, 0.65), plain, baseline=base).results[0].outcome is Outcome.PASS
    with pytest.raises(PolicyError, match="optimistic"):
        parse_policy({"version": 1, "rules": [{**rule, "drop_on": "upper"}]})


def test_cli_gates_each_variant_against_the_base(tmp_path: Path) -> None:
    from robustlab.cli import main

    policy = tmp_path / "p.yaml"
    policy.write_text("version: 1\nrules:\n  - {name: clean within 0 of base, metric: clean/accuracy, max_drop: 0.0, drop_on: lower}\n")
    load_policy(policy)
    r = CliRunner().invoke(main, ["evaluate", "--model", "zoo:digits-cnn", "--suite", str(SUITE.with_name("clean.yaml")), "--limit", "12", "--variants", "prune-unstructured:0.5",
                                  "--out", str(tmp_path / "o"), "--no-mlflow", "--quiet", "--policy", str(policy), "--junit", str(tmp_path / "j.xml")])
    assert r.exit_code == 1, r.output  # the lower bound of 12 samples is far below the base value: the rule fails
    assert (tmp_path / "j-prune-unstructured_0.5.xml").is_file()
    assert "clean within 0 of base" in (tmp_path / "j-prune-unstructured_0.5.xml").read_text()
