"""The pipelines layer: typed frozen configs, the certify suite built without YAML, one gate pipeline."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from robustlab.cli import main
from robustlab.errors import SuiteError
from robustlab.models import LoadOptions
from robustlab.pipelines.certify import CertifyOptions, certification_suite
from robustlab.pipelines.evaluate import RunConfig
from robustlab.scorecard import Scorecard
from robustlab.suite import build_suite, load_suite, parse_suite

CLEAN = str(Path(__file__).parent / "suites" / "clean.yaml")


def test_run_config_is_frozen_and_typed() -> None:
    cfg = RunConfig(model_spec="zoo:digits-cnn", load=LoadOptions(), suite=load_suite(CLEAN), ood_fit_data="digits")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1  # type: ignore[misc]
    assert not hasattr(cfg, "options")
    assert cfg.recorded_options("digits") == {"ood_fit_data": "digits", "dataset": "digits"}
    assert RunConfig(model_spec="m", load=LoadOptions(), suite=cfg.suite, defend_role="after").recorded_options(None) == {"defend": {"role": "after"}}


def test_certification_suite_equals_the_yaml_suite_it_replaces() -> None:
    """The suite the certify command used to build by dumping YAML and parsing it again."""
    import yaml

    p = CertifyOptions(sigmas=(0.25, 0.5), n=300, n0=30, num_points=6, attack=False, radii=(0.0, 0.5), noise_batch_size=64)
    built = certification_suite(p)
    doc = {"name": "certify", "checks": [{"check": "certify", "params": p.check_params()}]}
    parsed = parse_suite(yaml.safe_dump(doc, sort_keys=False), source="robustlab certify")
    assert built.name == parsed.name == "certify"
    assert [(e.check, e.id, e.params, e.raw_params) for e in built.entries] == [(e.check, e.id, e.params, e.raw_params) for e in parsed.entries]
    assert built.entries[0].params.batch_size == 64 and list(built.entries[0].params.sigmas) == [0.25, 0.5]
    assert certification_suite(p).sha256 == built.sha256 != certification_suite(dataclasses.replace(p, n=301)).sha256


def test_build_suite_validates_like_a_yaml_suite() -> None:
    with pytest.raises(SuiteError, match="alpha"):
        build_suite("x", [("certify", {"alpha": 2.0})])
    with pytest.raises(SuiteError, match="nope"):
        build_suite("x", [("nope", {})])
    with pytest.raises(SuiteError, match="duplicate id"):
        build_suite("x", [("clean", {}), ("clean", {})])


def test_certify_command_builds_its_suite_without_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import robustlab.suite

    def no_yaml(*a: object, **k: object) -> None:
        raise AssertionError("the certify command must not go through YAML")

    monkeypatch.setattr(robustlab.suite, "parse_suite", no_yaml)
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["certify", "--model", "zoo:digits-cnn", "--sigma", "0.25", "--n", "200", "--n0", "20", "--num-points", "4",
                                  "--no-attack", "--predict-n", "50", "--device", "cpu", "--out", str(out), "--no-mlflow", "--no-report", "--radii", "0,0.25"])
    assert r.exit_code == 0, (r.output, r.exception)
    card = Scorecard.read(out / "scorecard.json")
    assert card.suite["name"] == "certify" and card.checks[0].params["sigmas"] == [0.25]


def test_fit_data_is_recorded_and_reaches_the_checks(tmp_path: Path) -> None:
    """--fit-data was an untyped options entry; it must still be recorded in the run section."""
    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["evaluate", "--model", "zoo:digits-cnn", "--suite", CLEAN, "--limit", "16", "--fit-data", "digits",
                                  "--out", str(out), "--no-mlflow", "--no-report", "--quiet", "--device", "cpu"])
    assert r.exit_code == 0, (r.output, r.exception)
    run = json.loads((out / "scorecard.json").read_text())["run"]
    assert run["ood_fit_data"] == "digits" and run["dataset"] == "digits"


def test_gate_and_report_share_one_gate_pipeline(tmp_path: Path) -> None:
    """`robustlab gate` and `robustlab report --policy` reach the same verdict through pipelines.gate."""
    from robustlab.pipelines.gate import apply_gate, gate_report

    card_path = tmp_path / "scorecard.json"
    r = CliRunner().invoke(main, ["evaluate", "--model", "zoo:digits-cnn", "--suite", CLEAN, "--limit", "16", "--out", str(tmp_path),
                                  "--no-mlflow", "--no-report", "--quiet", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    key = next(k for k in Scorecard.read(card_path).metrics() if k.endswith("accuracy"))
    policy = tmp_path / "p.yaml"
    policy.write_text(f"version: 1\nrules:\n  - metric: {key}\n    op: \">=\"\n    threshold: 1.01\n    on: value\n")
    card = Scorecard.read(card_path)
    outcome = apply_gate(card, policy, junit=tmp_path / "j.xml", markdown_path=tmp_path / "s.md")
    assert outcome.exit_code == 1 == gate_report(card, policy).exit_code
    assert outcome.files == (tmp_path / "j.xml", tmp_path / "s.md") and (tmp_path / "s.md").read_text() == outcome.markdown
    g = CliRunner().invoke(main, ["gate", str(card_path), "--policy", str(policy)])
    assert g.exit_code == 1 and outcome.markdown.strip() in g.output


def test_certify_command_offers_every_check_parameter() -> None:
    """Each parameter of the certify check is reachable from `robustlab certify` (attack_n, settle_wrong
    and collapse_ratio were YAML-only), and each option of the command reaches the check."""
    import dataclasses as dc

    from robustlab.checks.certify import CertifyParams

    assert set(CertifyOptions().check_params()) == {f.name for f in dc.fields(CertifyParams)}
    import click

    command = main.get_command(click.Context(main), "certify")
    assert command is not None
    dests = {p.name for p in command.params}
    assert {f.name for f in dc.fields(CertifyOptions)} <= dests
    defaults = CertifyParams()
    for k, v in CertifyOptions().check_params().items():  # the command's defaults are the check's defaults
        assert v == getattr(defaults, k), k


def test_certify_command_passes_attack_n_settle_wrong_and_collapse_ratio(tmp_path: Path) -> None:
    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["certify", "--model", "zoo:digits-cnn", "--sigma", "0.25", "--n", "200", "--n0", "20", "--num-points", "3",
                                  "--sampling", "adaptive", "--no-settle-wrong", "--attack-n", "40", "--collapse-ratio", "0.9", "--attack-steps", "2",
                                  "--attack-samples", "4", "--interval-radii", "0.25", "--no-base-attack", "--predict-n", "50", "--device", "cpu",
                                  "--out", str(out), "--no-mlflow", "--no-report", "--radii", "0,0.25"])
    assert r.exit_code == 0, (r.output, r.exception)
    params = Scorecard.read(out / "scorecard.json").checks[0].params
    assert (params["attack_n"], params["settle_wrong"], params["collapse_ratio"]) == (40, False, 0.9)
    bad = CliRunner().invoke(main, ["certify", "--model", "zoo:digits-cnn", "--collapse-ratio", "1.5", "--out", str(tmp_path / "b")])
    assert bad.exit_code == 2 and "collapse-ratio" in bad.output
