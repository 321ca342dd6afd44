"""The shared parsing helpers (robustlab.parsing) and the CLI options that use them."""

from __future__ import annotations

import enum

import pytest
from click.testing import CliRunner

from robustlab.cli import main
from robustlab.errors import PolicyError, SuiteError
from robustlab.parsing import parse_enum, parse_fraction


class Color(str, enum.Enum):
    RED = "red"
    BLUE = "blue"


@pytest.mark.parametrize("text,value", [("8/255", 8 / 255), (" 0.5 ", 0.5), ("3", 3.0), ("-1/4", -0.25), ("1e-3", 1e-3)])
def test_parse_fraction(text: str, value: float) -> None:
    assert parse_fraction(text) == pytest.approx(value, rel=0, abs=0)


@pytest.mark.parametrize("text", ["8/0", "1/0.0", "inf", "nan", "1e999", "x", "", "1/2/3", "1e999/1"])
def test_parse_fraction_refuses_with_value_error_only(text: str) -> None:
    with pytest.raises(ValueError):
        parse_fraction(text)


def test_parse_enum() -> None:
    assert parse_enum(Color, "red", "colour") is Color.RED
    assert parse_enum(Color, " blue", "colour") is Color.BLUE
    assert parse_enum(Color, Color.BLUE, "colour") is Color.BLUE
    with pytest.raises(SuiteError, match=r"^colour must be one of red, blue, got 'green'\.$"):
        parse_enum(Color, "green", "colour")
    with pytest.raises(PolicyError, match="one of red, blue"):
        parse_enum(Color, 3, "colour", error=PolicyError)


@pytest.mark.parametrize("eps", ["8/0", "1/0", "inf", "nan"])
def test_defend_refuses_a_bad_budget_with_exit_2(eps: str) -> None:
    """--eps 8/0 used to escape as ZeroDivisionError (an internal error) instead of a usage error."""
    r = CliRunner().invoke(main, ["defend", "--model", "zoo:digits-cnn", "--method", "pgd-at", "--eps", eps, "--out", "x.safetensors"])
    assert r.exit_code == 2, (r.output, r.exception)
    assert "8/255" in r.output and "Traceback" not in r.output


def test_parse_enum_ignore_case_and_hint() -> None:
    assert parse_enum(Color, " RED ", "colour", ignore_case=True) is Color.RED
    with pytest.raises(SuiteError, match="got 'RED'"):
        parse_enum(Color, "RED", "colour")
    with pytest.raises(PolicyError, match=r"^colour must be one of red, blue, got 'Green'; fix the policy file\.$"):
        parse_enum(Color, "Green", "colour", error=PolicyError, ignore_case=True, hint="fix the policy file")


def test_precision_parse_uses_parse_enum() -> None:
    from robustlab.errors import RobustlabError
    from robustlab.fastpaths import Precision

    assert Precision.parse(" bf16") is Precision.BF16
    with pytest.raises(RobustlabError, match=r"^precision must be one of fp32, tf32, bf16, got 'fp16'\.$"):
        Precision.parse("fp16")


@pytest.mark.parametrize("text", ["inf", "-inf", "1e999", "8/0"])
def test_check_float_params_refuse_non_finite_text(text: str) -> None:
    """A check's float hyperparameter written as text goes through parsing.parse_fraction: "inf" and
    "1e999" used to pass as an infinite budget (checks/base had its own fraction parser)."""
    from robustlab.checks.base import CHECKS

    with pytest.raises(SuiteError, match="must be a number such as 0.031 or 8/255"):
        CHECKS.get("autoattack").parse_params({"epsilons": [text]})


@pytest.mark.parametrize("key", ["abs_stepsize", "rel_stepsize"])
def test_an_infinite_yaml_float_is_refused(key: str) -> None:
    """YAML's ``.inf`` arrives as a float: an infinite PGD step made inf * sign(0) = NaN iterates where the
    gradient is 0, the re-check dropped them and the points counted as robust (the scorecard wrote null)."""
    import yaml

    from robustlab.attacks.pgd import PGD
    from robustlab.checks.base import CHECKS

    raw = yaml.safe_load(f"{{norm: linf, steps: 5, epsilons: [0.1], {key}: .inf}}")
    with pytest.raises(SuiteError, match=f"{key} must be a finite number"):
        CHECKS.get("pgd").parse_params(raw)
    with pytest.raises(SuiteError, match="positive finite"):
        PGD(**{key: float("inf")})
