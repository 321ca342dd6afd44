"""Hostile or mistaken suite YAML files given to ``robustlab evaluate --suite FILE.yaml``: each is refused
quickly with one line and exit code 2, never a crash (exit 4), a hang or silent acceptance."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from robustlab.cli import main
from robustlab.errors import SuiteError
from robustlab.suite import parse_suite

EVAL = ["evaluate", "--model", "zoo:digits-cnn", "--data", "digits", "--limit", "8", "--no-mlflow", "--no-report", "-q"]


def _laughs(levels: int = 9) -> str:
    """A flow list whose last anchor expands to 10**levels scalars (a "billion laughs" file)."""
    return "[&a [lol,lol,lol,lol,lol,lol,lol,lol,lol,lol]" + "".join(
        f", &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "]" for i in range(levels - 1)) + "]"


def _one_error_line(r) -> str:  # type: ignore[no-untyped-def]
    assert r.exit_code == 2, (r.exit_code, r.output)
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.output
    return lines[0]


_BOMB_PROBE = """
import sys
from robustlab.errors import SuiteError
from robustlab.suite import parse_suite
for text in sys.argv[1:]:
    try:
        parse_suite(text)
    except SuiteError as exc:
        print(exc)
    else:
        print("accepted")
"""


def test_billion_laughs_suite_is_refused_quickly(tmp_path: Path) -> None:
    """``name: <billion laughs>`` hung `evaluate --suite` (str() of 10**9 shared values), eating memory.
    Run in a child process with a timeout, so that a regression fails instead of hanging the test run."""
    f = tmp_path / "bomb.yaml"
    f.write_text(f"name: {_laughs()}\nchecks: [clean]\n")
    r = subprocess.run([sys.executable, "-m", "robustlab", *EVAL, "--suite", str(f), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=60)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "aliases expand" in lines[0], (r.returncode, r.stderr[-2000:])


def test_billion_laughs_anywhere_in_a_suite_is_refused() -> None:
    texts = [t % _laughs() for t in ("description: %s\nchecks: [clean]\n", "save_adversarial: %s\nchecks: [clean]\n",
                                     "checks:\n - {check: clean, id: %s}\n", "checks:\n - {check: %s}\n",
                                     "checks:\n - {check: clean, description: %s}\n")]
    r = subprocess.run([sys.executable, "-c", _BOMB_PROBE, *texts], capture_output=True, text=True, timeout=60)
    out = r.stdout.splitlines()
    assert r.returncode == 0 and len(out) == len(texts) and all("aliases expand" in ln for ln in out), (r.returncode, r.stdout[-2000:], r.stderr[-2000:])


def test_self_referring_alias_is_refused() -> None:
    """``name: &a [*a]`` was accepted (the suite was named ``[[...]]``)."""
    with pytest.raises(SuiteError, match="refers to a value that contains it"):
        parse_suite("name: &a [*a]\nchecks: [clean]\n")


def test_ordinary_aliases_and_merge_keys_still_work() -> None:
    s = parse_suite("checks:\n - &p {check: pgd, id: a, params: {steps: 2, epsilons: [8/255]}}\n"
                    " - {<<: *p, id: b}\n")
    assert [e.id for e in s.entries] == ["a", "b"] and s.entries[1].params.steps == 2


def test_non_string_param_name_is_a_usage_error(tmp_path: Path) -> None:
    """``params: {1: 2}`` crashed (exit 4, TypeError in difflib) instead of naming the bad key."""
    f = tmp_path / "k.yaml"
    f.write_text("checks:\n - check: pgd\n   params: {1: 2}\n")
    r = CliRunner().invoke(main, [*EVAL, "--suite", str(f), "--out", str(tmp_path / "o")])
    assert "parameter name 1" in _one_error_line(r)


@pytest.mark.parametrize("params", ["{1: 2}", "{null: 2}", "{temperature: 1.0, 1: 2, b: 3}"])
def test_non_string_key_of_an_ood_detector_is_a_usage_error(params: str) -> None:
    """A detector mapping with a number key crashed in registry.build_params (sorting / difflib on an int)."""
    text = "checks:\n - {check: ood, params: {detectors: [%s]}}\n" % ("{name: energy, " + params[1:])
    with pytest.raises(SuiteError, match="has no parameter"):
        parse_suite(text)


@pytest.mark.parametrize("value", ["0", "false", "[]", "''"])
def test_params_that_are_not_a_mapping_are_refused(value: str) -> None:
    """``params: 0`` / ``false`` / ``[]`` were taken as no parameters at all, silently."""
    with pytest.raises(SuiteError, match="'params' must be a mapping"):
        parse_suite(f"checks:\n - {{check: pgd, params: {value}}}\n")


def test_empty_params_is_still_no_parameters() -> None:
    assert parse_suite("checks:\n - check: clean\n   params:\n").entries[0].raw_params == {}
