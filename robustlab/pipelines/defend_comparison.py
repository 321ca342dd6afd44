"""Before/after comparison of a defended model: which metrics moved, by how much."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ..metric_keys import parse
from ..scorecard import Scorecard


def headline_keys(card: Scorecard, *, max_per_check: int = 8) -> list[str]:
    """Each check's headline metric keys (shortest paths first, no per-class or per-severity keys),
    in suite order -- the same selection as the run summary table."""
    keys: list[str] = []
    for c in card.checks:
        parsed = {k: parse(k) for k in c.metrics}
        ks = [k for k, pk in parsed.items() if pk.class_index is None and pk.severity is None]
        keys += sorted(ks, key=lambda k: (len(parsed[k].segments), k))[:max_per_check]
    return keys


def before_after(before: Scorecard, after: Scorecard, *, max_per_check: int = 8) -> list[dict[str, Any]]:
    """Rows ``{metric, before, after, delta, ci_disjoint}`` for the headline metrics of either card
    (delta = after - before; ``ci_disjoint`` when both 95% intervals exist and do not overlap)."""
    from ..gates.compare import compare_scorecards

    cmp = compare_scorecards(before, after)
    by_key = {m.key: m for m in cmp.metrics}
    keys = list(dict.fromkeys(headline_keys(before, max_per_check=max_per_check) + headline_keys(after, max_per_check=max_per_check)))
    rows = []
    for k in keys:
        m = by_key.get(k)
        if m is None:
            continue
        rows.append({"metric": k, "before": m.a, "after": m.b, "delta": m.delta, "ci_disjoint": bool(m.disjoint)})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Plain-text before/after table."""
    def num(v: float | None, signed: bool = False) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        return f"{v:+.4f}" if signed else f"{v:.4f}"

    body = [(r["metric"], num(r["before"]), num(r["after"]), num(r["delta"], True), "yes" if r["ci_disjoint"] else "") for r in rows]
    head = ("metric", "before", "after", "delta", "CIs disjoint")
    w = [max([len(b[i]) for b in body] + [len(head[i])]) for i in range(5)]
    fmt = "  ".join([f"{{:<{w[0]}}}"] + [f"{{:>{x}}}" for x in w[1:]])
    return "\n".join([fmt.format(*head), fmt.format(*("-" * x for x in w))] + [fmt.format(*b) for b in body])


def write_comparison(before: Scorecard, after: Scorecard, out_dir: Path) -> tuple[list[dict[str, Any]], str]:
    """Write ``comparison.json`` (headline rows and every metric's delta) and ``comparison.txt``
    (the gates' full comparison: all moved metrics and paired McNemar tests) into ``out_dir``."""
    from ..gates.compare import compare_scorecards, format_comparison

    rows = before_after(before, after)
    cmp = compare_scorecards(before, after)
    out_dir.mkdir(parents=True, exist_ok=True)
    full = [{"metric": m.key, "before": m.a, "after": m.b, "delta": m.delta, "ci_disjoint": bool(m.disjoint)} for m in cmp.metrics]
    flags = [{"name": f.name, "lost": f.result.lost, "gained": f.result.gained, "n": f.result.n, "p_two_sided": f.result.p_two_sided} for f in cmp.flags]
    (out_dir / "comparison.json").write_text(json.dumps({"headline": rows, "metrics": full, "paired_flags": flags,
                                                         "provenance_differences": {k: list(v) for k, v in cmp.provenance.items()}}, indent=1))
    table = format_table(rows)
    (out_dir / "comparison.txt").write_text(table + "\n\n" + format_comparison(cmp))
    return rows, table
