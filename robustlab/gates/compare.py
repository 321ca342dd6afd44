"""What moved between two scorecards (``robustlab compare A B``)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from ..scorecard import Scorecard
from .protocols import RUN_SETTINGS as RUN_SETTINGS, mismatch_warning as mismatch_warning, setting_mismatches as setting_mismatches  # re-exported: callers import them from here
from .rules import sample_ids_of
from .mcnemar import McNemarResult, is_flag_list, paired_mcnemar


@dataclass(frozen=True)
class MetricDelta:
    """One metric in A and/or B; ``delta = b - a``; ``disjoint`` when both CIs exist and do not overlap."""

    key: str
    a: float | None
    b: float | None
    delta: float | None
    disjoint: bool = False
    in_a: bool = True  # the key is in A (``a`` is None there when its value is NaN)
    in_b: bool = True


@dataclass(frozen=True)
class FlagDelta:
    """Paired per-sample flags (``check_id/name``) of A and B: McNemar counts, lost = good in A, bad in B."""

    name: str
    result: McNemarResult


@dataclass(frozen=True)
class Comparison:
    metrics: tuple[MetricDelta, ...]
    flags: tuple[FlagDelta, ...]
    provenance: dict[str, tuple[str, str]] = field(default_factory=dict)
    settings: dict[str, tuple[str, str]] = field(default_factory=dict)

    def moved(self, *, min_abs: float = 0.0) -> list[MetricDelta]:
        """Metrics that changed by more than ``min_abs``, appeared, or disappeared (largest first)."""
        out = [m for m in self.metrics if (m.delta is None and not (m.in_a and m.in_b and m.a is None and m.b is None)) or (m.delta is not None and abs(m.delta) > min_abs)]
        return sorted(out, key=lambda m: (m.delta is not None, -abs(m.delta or 0.0), m.key))


def _finite(v: float | None) -> float | None:
    return None if v is None or math.isnan(v) else v


def compare_scorecards(a: Scorecard, b: Scorecard) -> Comparison:
    """Compare metrics (with CI overlap), paired per-sample flags (exact McNemar) and provenance."""
    a, b = a.in_key_schema(), b.in_key_schema()  # a 1.x card (or producer) is compared under its 2.0 keys
    ma, mb = a.metrics(), b.metrics()
    ia, ib = a.intervals(), b.intervals()
    rows = []
    for k in sorted(set(ma) | set(mb)):
        va, vb = _finite(ma.get(k)), _finite(mb.get(k))
        d = vb - va if va is not None and vb is not None else None
        disjoint = k in ia and k in ib and (ia[k].high < ib[k].low or ib[k].high < ia[k].low)
        rows.append(MetricDelta(k, va, vb, d, disjoint, k in ma, k in mb))
    flags = []
    for ca in a.checks:
        cb = b.check(ca.id)
        if cb is None:
            continue
        for name, fa in ca.per_sample.items():
            fb = cb.per_sample.get(name)
            if fb is None or not is_flag_list(fa) or not is_flag_list(fb):
                continue
            res = paired_mcnemar(sample_ids_of(b, len(fb)), fb, sample_ids_of(a, len(fa)), fa)
            flags.append(FlagDelta(f"{ca.id}/{name}", res))
    prov: dict[str, tuple[str, str]] = {}
    for label, da, db in (
        ("model.spec", a.model.get("spec"), b.model.get("spec")),
        ("model.sha256", a.model.get("sha256"), b.model.get("sha256")),
        ("data.spec", a.data.get("spec"), b.data.get("spec")),
        ("data.n", a.data.get("n"), b.data.get("n")),
        ("data.content_sha256", a.data.get("content_sha256"), b.data.get("content_sha256")),
        ("data.ids_sha256", a.data.get("ids_sha256"), b.data.get("ids_sha256")),
        ("suite", a.suite.get("name"), b.suite.get("name")),
        ("suite.sha256", a.suite.get("sha256"), b.suite.get("sha256")),
        ("seed", a.run.get("seed"), b.run.get("seed")),
        ("robustlab", a.tool.get("version"), b.tool.get("version")),
    ):
        if da != db:
            prov[label] = (str(da), str(db))
    return Comparison(tuple(rows), tuple(flags), prov, setting_mismatches(a, b))


_MD_SPECIAL = re.compile(r"([\\`|<>\[\]])")


def _line(text: str, markdown: bool) -> str:
    """A scorecard string as one printable line: control characters (newlines, terminal escapes) as visible
    escapes; in markdown also the characters that would open a tag, link, code span or table cell escaped."""
    s = "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
    return _MD_SPECIAL.sub(r"\\\1", s) if markdown else s


def _fmt(v: float, sign: str = "") -> str:
    """4 decimals; a huge value (a hand-edited 1e308) in 6 significant digits rather than 300 figures."""
    return f"{v:{sign}.4f}" if abs(v) < 1e6 else f"{v:{sign}.6g}"


def format_comparison(cmp: Comparison, *, min_abs: float = 0.0, markdown: bool = False) -> str:
    """Human-readable text (or markdown) of a :class:`Comparison`."""
    def num(v: float | None, present: bool = True) -> str:
        return ("NaN" if present else "—") if v is None else _fmt(v)

    lines: list[str] = []
    if cmp.settings:
        lines.append(("**WARNING:** " if markdown else "WARNING: ") + _line(mismatch_warning(cmp.settings), False))
        lines.append("")
    if cmp.provenance:
        lines.append("## Provenance differences" if markdown else "Provenance differences:")
        for k, (x, y) in cmp.provenance.items():
            x, y = _line(x, markdown), _line(y, markdown)
            lines.append(f"- {k}: {x} -> {y}" if markdown else f"  {k}: {x} -> {y}")
        lines.append("")
    moved = cmp.moved(min_abs=min_abs)
    lines.append("## Metrics that moved" if markdown else f"Metrics that moved (|delta| > {min_abs:g}): {len(moved)} of {len(cmp.metrics)}")
    if markdown:
        lines += ["", "| metric | A | B | delta | CIs disjoint |", "|---|---|---|---|---|"]
    for m in moved:
        if not m.in_a:
            d = "new"
        elif not m.in_b:
            d = "gone"
        elif m.delta is None:
            d = "from NaN" if m.a is None else "to NaN"
        else:
            d = _fmt(m.delta, "+")
        flag = "yes" if m.disjoint else ""
        a, b, key = num(m.a, m.in_a), num(m.b, m.in_b), _line(m.key, markdown)
        lines.append(f"| {key} | {a} | {b} | {d} | {flag} |" if markdown else f"  {d:>8}  {key}: {a} -> {b}{'  (CIs disjoint)' if m.disjoint else ''}")
    if cmp.flags:
        lines += ["", "## Paired per-sample flags (exact McNemar)" if markdown else "Paired per-sample flags (exact McNemar, lost = good in A, bad in B):"]
        for f in cmp.flags:
            r = f.result
            lines.append(f"{'- ' if markdown else '  '}{_line(f.name, markdown)}: {r.lost} lost, {r.gained} gained of {r.n} paired; two-sided p={r.p_two_sided:.3g}, regression p={r.p_regression:.3g}")
    return "\n".join(lines) + "\n"
