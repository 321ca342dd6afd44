"""Defects noticed by earlier reviews and left, now fixed: numeric CLI options read numbers one way
(fractions, exponents, no misreadings), suite and policy YAML read 1e5 / 1e-2 as the numbers they are,
suite names are text, YAML syntax errors are one line with file, line and column, and ``defend`` never
trains at learning rate 0 nor on images of a single class."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from robustlab.cli import main
from robustlab.errors import DataError, PolicyError, RobustlabError, SuiteError
from robustlab.suite import parse_suite


def _one_error_line(r: Any, *, says: str) -> str:
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    line = r.stderr.strip()
    assert line.startswith("error:") and "\n" not in line and "Traceback" not in line, r.stderr
    assert says in line, line
    return line


# -- 1. numeric CLI options -------------------------------------------------------------------------
@pytest.fixture
def certify_options(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """``robustlab certify`` stopped right after its options are parsed: the certify check's params."""
    import robustlab.pipelines.certify as pc

    seen: dict[str, Any] = {}

    def stop(cfg: Any) -> None:
        seen["params"] = cfg.suite.entries[0].params
        raise RobustlabError("stopped before the run")

    monkeypatch.setattr(pc, "certify", stop)
    return seen


def _certify(tmp_path: Path, *args: str) -> Any:
    return CliRunner().invoke(main, ["certify", "--model", "zoo:digits-cnn", "--out", str(tmp_path / "c"), *args])


def test_certify_sigma_takes_a_fraction_as_radii_does(tmp_path: Path, certify_options: dict[str, Any]) -> None:
    """Before: --sigma 1/4 was refused ('is not a valid float') while --radii 1/4 was read as 0.25."""
    r = _certify(tmp_path, "--sigma", "1/4", "--sigma", "64/255", "--radii", "0,1/4", "--alpha", "1e-3")
    assert "stopped before the run" in r.output, r.output
    p = certify_options["params"]
    assert list(p.sigmas) == [0.25, 64 / 255] and list(p.radii) == [0.0, 0.25] and p.alpha == 0.001


def test_count_options_take_exponent_notation(tmp_path: Path, certify_options: dict[str, Any]) -> None:
    """Before: --n 1e5 was refused ('is not a valid integer range') while a suite's n takes it."""
    r = _certify(tmp_path, "--n", "1e5", "--n0", "1.0e+2")
    assert "stopped before the run" in r.output, r.output
    assert certify_options["params"].n == 100_000 and certify_options["params"].n0 == 100


@pytest.mark.parametrize("args,says", [
    (["--sigma", "0_5"], "--sigma"),      # float() read it as 5
    (["--radii", "0_5"], "--radii"),      # parse_fraction read it as 5
    (["--radii", "1 5"], "--radii"),      # the blank was dropped: 15
    (["--alpha", "nan"], "--alpha"),      # click's float took it
    (["--n", "1.5e0"], "whole number"),
    (["--n", "0_5"], "--n"),              # int() read it as 5
])
def test_numeric_options_refuse_what_they_would_misread(tmp_path: Path, certify_options: dict[str, Any], args: list[str], says: str) -> None:
    r = _certify(tmp_path, *args)
    _one_error_line(r, says=says)
    assert "params" not in certify_options


def test_parsing_helpers() -> None:
    from robustlab.parsing import as_integer, as_number, parse_fraction, parse_integer

    assert parse_integer("1e5") == parse_integer("1.0e+5") == as_integer("1e5") == as_integer(1.0e5) == 100_000
    assert as_number("1e-2") == 0.01 and as_number("8/255") == 8 / 255
    for bad in ("1.5e0", "8/2", "0_5", "1e99", "x", "nan"):
        with pytest.raises(ValueError):
            parse_integer(bad)
    for bad in ("0_5", "1_0/4", "nan/1", " 1 5"):
        with pytest.raises(ValueError):
            parse_fraction(bad)
    for bad_value in (True, 1.5, [1], float("inf")):
        with pytest.raises(ValueError):
            as_integer(bad_value)


def test_generated_method_options_take_exponents_and_refuse_underscores() -> None:
    """``defend --steps 1e1`` (a method's int option) was refused; ``--steps 0_5`` was read as 5."""
    import click

    from robustlab.commands.plugin_options import parse_value
    from robustlab.registry import ParamField

    steps = ParamField("steps", "int", False, 10, "", "steps")
    assert parse_value(steps, "1e1", "steps") == 10
    with pytest.raises(click.BadParameter, match="takes an integer .* got '0_5'"):
        parse_value(steps, "0_5", "steps")


# -- 2. exponent notation in suites and policies ----------------------------------------------------
@pytest.mark.parametrize("text", ["1e5", "1.0e+5", "100000", "'1e5'"])
def test_suite_integer_parameter_takes_exponent_notation(text: str) -> None:
    """Before: n: 1e5 (a string in YAML 1.1) was refused as "must be an integer, got '1e5'"; 1.0e+5 (a float) too."""
    s = parse_suite(f"checks:\n  - check: certify\n    params: {{n: {text}}}\n", source="s.yaml")
    assert s.entries[0].params.n == 100_000 and type(s.entries[0].params.n) is int


def test_suite_integer_parameter_refuses_a_fraction_clearly() -> None:
    with pytest.raises(SuiteError, match=r"certify\.n must be an integer such as 100000 or 1e5; '1\.5e0' is not a whole number"):
        parse_suite("checks:\n  - check: certify\n    params: {n: 1.5e0}\n", source="s.yaml")


def test_detector_parameters_take_exponent_notation() -> None:
    """Before: {name: knn, k: 1e1} and {name: odin, eps: 1e-3} were refused ('takes an int/float, got '1e1'')."""
    s = parse_suite("checks:\n  - check: ood\n    params: {detectors: [{name: knn, k: 1e1}, {name: odin, eps: 1e-3}]}\n", source="s.yaml")
    assert dict(s.entries[0].params.detector_specs()) == {"knn": {"k": 10}, "odin": {"eps": 0.001}}
    with pytest.raises(SuiteError, match="k takes an int .* not a whole number"):
        parse_suite("checks:\n  - check: ood\n    params: {detectors: [{name: knn, k: 2.5e0}]}\n", source="s.yaml")


def test_policy_numbers_take_exponent_notation(tmp_path: Path) -> None:
    """Before: threshold: 1e-2 was 'expected a finite number, got '1e-2''."""
    from robustlab.gates import load_policy

    p = tmp_path / "p.yaml"
    p.write_text("min_samples: 1e2\nrules:\n  - metric: clean/accuracy\n    op: '>='\n    threshold: 1e-2\n    max_drop: 2e-2\n")
    rule = load_policy(p).rules[0]
    assert rule.threshold == 0.01 and rule.max_drop == 0.02 and rule.min_samples == 100
    p.write_text("rules:\n  - metric: clean/accuracy\n    op: '>='\n    threshold: 1e-2x\n")
    with pytest.raises(PolicyError, match=r"threshold: expected a finite number .* got '1e-2x'"):
        load_policy(p)
    p.write_text("min_samples: 2.5e0\nrules:\n  - metric: clean/accuracy\n    op: '>='\n    threshold: 0.5\n")
    with pytest.raises(PolicyError, match="non-negative integer"):
        load_policy(p)


# -- 3. suite names are text ------------------------------------------------------------------------
@pytest.mark.parametrize("body,key", [
    ("name: [a]\nchecks: [clean]\n", "'name' must be text, got a list"),
    ("name: 1.10\nchecks: [clean]\n", "'name' must be text, got a number"),    # would be named '1.1'
    ("description: {a: 1}\nchecks: [clean]\n", "'description' must be text, got a mapping"),
    ("checks:\n  - {check: clean, description: [x]}\n", "'description' must be text"),
    ("checks:\n  - {check: clean, id: [x]}\n", "'id' must be text"),
])
def test_suite_names_and_descriptions_must_be_text(body: str, key: str) -> None:
    """Before: name: [a] gave a suite named "['a']" (and descriptions alike)."""
    with pytest.raises(SuiteError, match=f"suite s.yaml.*{key}"):
        parse_suite(body, source="s.yaml")
    assert parse_suite("name: '1.10'\ndescription: a b\nchecks: [clean]\n", source="s.yaml").name == "1.10"


def test_policy_rule_name_must_be_text() -> None:
    from robustlab.gates import parse_policy

    with pytest.raises(PolicyError, match="rules.0..name must be text"):
        parse_policy({"rules": [{"name": ["a"], "metric": "clean/accuracy", "op": ">=", "threshold": 0.5}]})


# -- 4. YAML syntax errors are one line with file, line and column --------------------------------
def test_policy_yaml_error_is_one_line_with_line_and_column(tmp_path: Path) -> None:
    """Before: PyYAML's text: 'while parsing a flow sequence in "<unicode string>", line 4, column 16: threshold: [0.9 ^ ...'."""
    p = tmp_path / "policy.yaml"
    p.write_text("rules:\n  - metric: clean/accuracy\n    op: '>='\n    threshold: [0.9\n")
    card = tmp_path / "card.json"
    card.write_text("{}")
    r = CliRunner().invoke(main, ["gate", str(card), "--policy", str(p)])
    line = _one_error_line(r, says=f"policy file {p} is not valid YAML at line 5, column 1: expected ',' or ']'")
    assert "<unicode string>" not in line and "^" not in line and "flow sequence that starts at line 4, column 16" in line


@pytest.mark.parametrize("text,where", [
    ("checks: [clean]\nname: a\x07b\n", "line 2, column 8: character U+0007 is not allowed"),
    ("checks:\n  - check: clean\n params: {}\n", "line 3, column 2"),
])
def test_suite_yaml_error_names_line_and_column(text: str, where: str) -> None:
    """Before: a control character gave 'unacceptable character #x0007: ... in "<unicode string>", position 23'."""
    with pytest.raises(SuiteError) as err:
        parse_suite(text, source="s.yaml")
    msg = str(err.value)
    assert msg.startswith(f"suite s.yaml is not valid YAML at {where}") and "<unicode string>" not in msg, msg


def test_policy_yaml_error_for_a_repeated_key_and_bad_bytes(tmp_path: Path) -> None:
    from robustlab.gates import load_policy

    p = tmp_path / "p.yaml"
    p.write_text("rules: []\nrules: []\n")
    with pytest.raises(PolicyError, match=r"is not valid YAML at line 2, column 1: key 'rules' appears twice"):
        load_policy(p)
    p.write_bytes(b"rules: [\xff]\n")
    with pytest.raises(PolicyError, match="is not UTF-8 text"):
        load_policy(p)


# -- 5. defend: the cyclic schedule and single-class data -------------------------------------------
@pytest.mark.parametrize("total", [1, 2, 3, 7])
def test_cyclic_schedule_never_gives_lr_zero(total: int) -> None:
    """Before: step 0 of every cyclic run trained at lr 0 (t = 0), so a one-step run changed nothing."""
    from robustlab.defenses.trainer import TrainConfig, lr_at

    cfg = TrainConfig(epochs=1, schedule="cyclic", lr=0.1)
    lrs = [lr_at(cfg, s, total) for s in range(total)]
    assert all(0 < v <= 0.1 for v in lrs), lrs
    assert lrs == pytest.approx(lrs[::-1])  # the triangle's symmetry
    assert max(lrs) <= 0.1 and (total > 1 or lrs == [0.1])  # a lone step is the peak


def test_warmup_never_passes_the_peak_lr() -> None:
    from robustlab.defenses.trainer import TrainConfig, lr_at

    cfg = TrainConfig(epochs=2, schedule="constant", lr=0.1, warmup_epochs=0.5)  # 2.5 warmup steps of 10
    assert max(lr_at(cfg, s, 10) for s in range(10)) == pytest.approx(0.1)


DEFEND = ["defend", "--model", "zoo:digits-cnn", "--method", "fast-at", "--epochs", "1", "--val-limit", "8", "--no-mlflow", "-q"]


def test_one_step_fast_at_changes_the_model(tmp_path: Path) -> None:
    """Before: 60 images in one batch = one step, at lr 0: the written model was the input, exit 0."""
    from safetensors.torch import load_file

    from robustlab.models import load_model

    out = tmp_path / "one.safetensors"
    r = CliRunner().invoke(main, [*DEFEND, "--data", "digits", "--train-limit", "60", "--batch-size", "128", "--out", str(out)])
    assert r.exit_code == 0, r.output
    base = load_model("zoo:digits-cnn", device="cpu").net.state_dict()
    trained = load_file(str(out))
    changed = [k for k, v in base.items() if k in trained and v.dtype.is_floating_point and not torch.equal(v, trained[k].to(v.dtype))]
    assert changed, "the one training step left every weight unchanged"


def test_defend_refuses_training_images_of_one_class(tmp_path: Path) -> None:
    """Before: accepted without a word (exit 0): the model learns to answer the one class everywhere."""
    from robustlab.data import load_dataset

    train = load_dataset("digits", split="train")
    idx = (train.y == 3).nonzero().flatten()[:40].tolist()
    data = tmp_path / "threes.npz"
    np.savez(data, x_train=train.images(idx).numpy(), y_train=np.full(len(idx), 3), x_val=train.images(idx[:8]).numpy(), y_val=np.full(8, 3))
    out = tmp_path / "o.safetensors"
    r = CliRunner().invoke(main, [*DEFEND, "--data", f"npz:{data}", "--out", str(out)])
    _one_error_line(r, says="one class only (label 3, 40 images)")
    assert not out.exists()


def test_defend_warns_when_classes_are_missing(caplog: pytest.LogCaptureFixture) -> None:
    from robustlab.pipelines.defend import _refuse_one_class

    class Labels:
        def __init__(self, *y: int) -> None:
            self.y = torch.tensor(y)

        def __len__(self) -> int:
            return len(self.y)

    with caplog.at_level(logging.WARNING, logger="robustlab.pipelines.defend"):
        _refuse_one_class(Labels(0, 1, 1, 0), 10, None)
    assert "holds 2 of the model's 10 classes" in caplog.text
    with pytest.raises(DataError, match="--train-limit 4"):
        _refuse_one_class(Labels(2, 2), 10, 4)
