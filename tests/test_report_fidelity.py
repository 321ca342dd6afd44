"""What the report, `gate` and `compare` show an auditor says what the scorecard says:
a failing gate row never shows its observed value and threshold as the same number, an incomplete
run is called incomplete, the certify headline is at the primary radius, small p-values keep their
digits, the recorded data set decides the budget sentence, NaN is not called new or gone, and a
Wilson interval contains its point."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from robustlab.scorecard import Scorecard

GOLDEN = Path(__file__).parent / "golden"


def _card(name: str = "quick", edit=None) -> Scorecard:
    raw = json.loads((GOLDEN / f"{name}.json").read_text())
    if edit is not None:
        edit(raw)
    return Scorecard.from_dict(raw).in_key_schema()


def test_a_failing_gate_row_shows_observed_and_threshold_apart(tmp_path: Path) -> None:
    """Before: 'FAIL | 0.8864 | 0.8864 | ... 0.8864 violates >= 0.88637'."""
    from robustlab.gates import load_policy
    from robustlab.gates.markdown import markdown_summary
    from robustlab.gates.rules import distinct, evaluate_policy
    from robustlab.report.render import fmt_pair

    assert distinct(0.886362, 0.88637) == ("0.88636", "0.88637")
    assert distinct(0.5, 0.5) == ("0.5", "0.5")
    assert fmt_pair(0.886362, 0.88637) == ("0.88636", "0.88637")
    assert fmt_pair(0.9, 0.8) == ("0.9000", "0.8000")
    card = _card()
    acc = card.metrics()["clean/accuracy"]
    pol = tmp_path / "p.yaml"
    pol.write_text(f"rules:\n  - metric: clean/accuracy\n    op: '>='\n    threshold: {acc + 4e-6!r}\n")
    report = evaluate_policy(card, load_policy(pol))
    row = next(r for r in report.results if r.metric == "clean/accuracy")
    assert row.outcome.value == "fail"
    words = row.message.split()
    assert words[words.index("violates") - 1] != words[-1], row.message
    md = markdown_summary(report, card)
    line = next(ln for ln in md.splitlines() if "clean/accuracy" in ln)
    cells = [c.strip() for c in line.split("|")]
    assert cells[3] != cells[4], line


def test_an_incomplete_run_is_called_incomplete_in_the_report(tmp_path: Path) -> None:
    """Before: a killed run's report said 'Checks: 1 ok', 'not-gated', nothing about the missing checks."""
    from robustlab.report import write_report
    from robustlab.report.render import build_context

    def killed(raw: dict) -> None:
        raw["checks"] = raw["checks"][:1]
        raw["run"].pop("complete", None)

    card = _card(edit=killed)
    ctx = build_context(card)
    assert ctx["overall"] == "inconclusive"
    assert any("incomplete" in w and "3 suite check(s) missing" in w for w in ctx["warnings"]), ctx["warnings"]
    write_report(card, tmp_path / "r.html")
    assert "this run is incomplete" in (tmp_path / "r.html").read_text()
    assert build_context(_card())["overall"] == "not-gated" and not build_context(_card())["warnings"]


def test_the_certify_headline_is_at_the_primary_radius() -> None:
    from robustlab.report.render import _headline, _headline_rank

    assert _headline_rank("certify/sigma_0.25/certified_accuracy_at_r_0.5") < _headline_rank("certify/sigma_0.25/certified_accuracy_at_r_0.25") \
        < _headline_rank("certify/sigma_0.25/certified_accuracy_at_r_0")
    card = _card("cifar")
    m = card.metrics()
    at = {v for k, v in m.items() if k.endswith("/certified_accuracy_at_r_0.5")}
    at0 = {v for k, v in m.items() if k.endswith("/certified_accuracy_at_r_0")}
    tiles = [t for t in _headline(card, limit=100) if "ertified" in t[0]]
    assert tiles and all(float(t[1]) in {round(v, 4) for v in at} for t in tiles), (tiles, at, at0)


def test_small_p_values_keep_their_digits() -> None:
    from robustlab.report.render import fmt_pvalue

    assert fmt_pvalue(4.8e-7) == "4.8e-07" and fmt_pvalue(0.25) == "0.2500" and fmt_pvalue(0.0) == "0.0000"


def test_the_recorded_data_set_decides_the_budget_sentence() -> None:
    """Before: data.spec npz:test.npz with data.dataset mnist gave no 'below the standard mnist budget' line."""
    from robustlab.report.untested import not_tested

    def named(raw: dict) -> None:
        raw["data"]["spec"] = "npz:test.npz"
        raw["data"]["dataset"] = "mnist"

    lines = not_tested(_card(edit=named))
    assert any("below the standard mnist budget" in ln for ln in lines), lines

    def scaled(raw: dict) -> None:  # the same budgets on a 0..255 model are 255x larger in its units
        raw["data"]["dataset"] = "mnist"
        raw["model"]["bounds"] = [0.0, 255.0]

    assert any("below the standard mnist budget" in ln for ln in not_tested(_card(edit=scaled)))


def test_compare_names_nan_as_nan_not_new_or_gone() -> None:
    from robustlab.gates.compare import compare_scorecards, format_comparison

    def nan_in(raw: dict, value) -> None:
        raw["checks"][0]["metrics"]["clean/ece"] = value

    a = _card(edit=lambda r: nan_in(r, None))
    b = _card(edit=lambda r: nan_in(r, 0.03))
    text = format_comparison(compare_scorecards(a, b))
    line = next(ln for ln in text.splitlines() if "clean/ece" in ln)
    assert "from NaN" in line and "NaN -> 0.0300" in line and "new" not in line, line
    both = compare_scorecards(a, _card(edit=lambda r: nan_in(r, None)))
    assert not [m for m in both.moved() if m.key == "clean/ece"]


def test_a_wilson_interval_contains_its_point_at_the_ends() -> None:
    from robustlab.stats import wilson_interval

    for n in (1, 7, 20, 360, 10_000):
        lo0 = wilson_interval(0, n)
        hi1 = wilson_interval(n, n)
        assert lo0.low == 0.0 and hi1.high == 1.0
        for k in range(0, n + 1, max(1, n // 7)):
            iv = wilson_interval(k, n)
            assert iv.low <= k / n <= iv.high, (k, n, iv)
