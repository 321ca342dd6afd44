"""The suites under bench/ measure what they say they measure."""

from __future__ import annotations

from pathlib import Path

from robustlab.suite import load_suite

BENCH_SUITES = Path(__file__).resolve().parents[1] / "bench" / "suites"


def test_full_certify_is_the_full_suites_certify_check() -> None:
    """bench/suites/full_certify.yaml times the `full` suite's certify check alone (issue 18, item 1): it
    must carry exactly that check's parameters, so a change to suites/full.yaml cannot leave it stale."""
    (alone,) = load_suite(str(BENCH_SUITES / "full_certify.yaml")).entries
    (in_full,) = [e for e in load_suite("full").entries if e.check == "certify"]
    assert (alone.check, alone.id) == (in_full.check, in_full.id)
    assert alone.raw_params == in_full.raw_params and alone.params == in_full.params
