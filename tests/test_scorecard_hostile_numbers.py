"""Scorecards that are valid JSON but hold numbers no double can, or a malformed ``run.variants``:
``verify``/``gate``/``report`` answer with one ``error:`` line and exit 2, or render the report with a
warning, never exit 4 (found by a probe: ``10**400`` raised OverflowError, ``1e999`` read as infinity
and crashed the gate, a plot of ``[1e308, -1e308]`` and a list-shaped ``run.variants`` crashed the report)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_report_cards import make_card

from robustlab.cli import main
from robustlab.jsonio import loads_strict
from robustlab.report.svg import nice_ticks


@pytest.mark.parametrize("text", ["1e999", "-1e999", "[1, 1E400]", str(10**400), '{"a": -' + "9" * 320 + "}"])
def test_numbers_beyond_a_double_are_refused(text):
    with pytest.raises(ValueError, match="beyond the range of a double"):
        loads_strict(text)


def test_numbers_within_a_double_still_read():
    assert loads_strict("[1.7e308, -1.7e308, 5e-324, 18446744073709551615]") == [1.7e308, -1.7e308, 5e-324, 2**64 - 1]


def _write(tmp_path: Path, edit) -> Path:
    d = make_card(n=50).to_dict()
    edit(d)
    p = tmp_path / "card.json"
    p.write_text(json.dumps(d))
    return p


@pytest.mark.parametrize("number", [str(10**400), "1e999"])
@pytest.mark.parametrize("command", ["verify", "gate", "report"])
def test_cli_refuses_a_number_beyond_a_double_with_one_line(tmp_path, number, command):
    card = _write(tmp_path, lambda d: d["checks"][0]["metrics"].update({"clean/accuracy": "@@"}))
    card.write_text(card.read_text().replace('"@@"', number))
    pol = tmp_path / "pol.yaml"
    pol.write_text("rules:\n  - metric: clean/accuracy\n    op: '>='\n    threshold: 0.5\n")
    args = {"verify": ["verify", str(card)], "gate": ["gate", str(card), "--policy", str(pol)],
            "report": ["report", str(card), "--output", str(tmp_path / "r.html")]}[command]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2, res.output
    assert "beyond the range of a double" in res.output and "Traceback" not in res.output


def test_report_draws_a_series_whose_span_overflows(tmp_path):
    card = _write(tmp_path, lambda d: d["checks"][0]["series"].update({"big": {"x": [0, 1], "y": {"a": [1e308, -1e308]}, "kind": "line"}}))
    res = CliRunner().invoke(main, ["report", str(card), "--output", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    assert nice_ticks(-1e308, 1e308) == [-1e308, 1e308] and nice_ticks(0.0, 1.0)[-1] == 1.0


@pytest.mark.parametrize("variants, shown", [
    ({"base": [], "variants": 5}, False),
    ({"base": {"spec": "m.pt"}, "variants": [5, {"name": "<b>int8</b>", "audit": [{"verdict": "suspect"}], "metrics": [{"metric": "clean/accuracy", "base_ci": "x"}]}]}, True),
])
def test_report_survives_a_malformed_variants_section(tmp_path, variants, shown):
    card = _write(tmp_path, lambda d: d["run"].update({"variants": variants}))
    res = CliRunner().invoke(main, ["report", str(card), "--output", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    html = (tmp_path / "r.html").read_text()
    assert "run.variants is malformed" in html
    assert ('id="variants"' in html) is shown
    assert "<b>int8</b>" not in html  # escaped like every other string


def test_report_does_not_draw_a_grid_of_millions_of_cells(tmp_path):
    """Before: a 1000 x 1000 grid in an edited or foreign scorecard was drawn cell by cell, about 250 bytes of SVG
    each (a report of a quarter of a gigabyte from a scorecard of a few megabytes). A 100-class confusion matrix,
    the largest the clean check records, is still drawn in full."""
    from robustlab.report.svg import MAX_HEATMAP_CELLS, render_series
    from robustlab.scorecard import Series

    names = [f"c{i}" for i in range(1000)]
    big = Series(x=names, rows=names, y={n: [float(j == i) for j in range(1000)] for i, n in enumerate(names)}, x_label="predicted", y_label="true", kind="grid")
    svg = render_series(big, title="confusion")
    assert len(svg) < 2000 and "1000 x 1000 grid" in svg and "scorecard JSON" in svg
    side = int(MAX_HEATMAP_CELLS ** 0.5)
    ok = Series(x=names[:side], rows=names[:side], y={n: [1.0] * side for n in names[:side]}, x_label="predicted", y_label="true", kind="grid")
    assert render_series(ok).count("<rect") == side * side

    card = make_card(n=50)
    card.checks[0].series["confusion"] = big
    p = tmp_path / "card.json"
    p.write_text(json.dumps(card.to_dict()))
    r = CliRunner().invoke(main, ["report", str(p), "-o", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "r.html").stat().st_size < 3_000_000
