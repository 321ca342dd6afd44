"""Inline SVG plots for the HTML report (no JavaScript, no network, no matplotlib).

Every function takes a :class:`~robustlab.scorecard.Series` and returns one ``<svg class="plot">``
string; all text is XML-escaped here, so the template may mark it safe.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any, Callable, Sequence

from ..scorecard import Series

#: Okabe-Ito colour-blind-safe palette.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")


def _e(s: Any) -> str:
    return escape(str(s), quote=True)


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering ``[lo, hi]``."""
    if hi <= lo:
        hi = lo + 1.0
    if not math.isfinite(hi - lo):  # e.g. [-1e308, 1e308]: the span overflows a double; show the ends only
        return [lo, hi] if math.isfinite(lo) and math.isfinite(hi) else []
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    out = []
    t = start
    while t <= hi + step * 1e-6:
        out.append(round(t, 12))
        t += step
    return out


def _fmt_tick(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1000 or abs(v) < 1e-3:
        return f"{v:.1e}"
    return f"{v:.4g}"


def _y_range(values: Sequence[float]) -> tuple[float, float]:
    if not values:
        return 0.0, 1.0
    lo, hi = min(values), max(values)
    if lo >= 0 and hi <= 1:
        return 0.0, 1.0
    pad = (hi - lo) * 0.08 or abs(hi) * 0.1 or 1.0
    return (0.0 if lo >= 0 else lo - pad), hi + pad


def _legend(names: list[str], x0: float, y0: float, width: float) -> tuple[str, float]:
    parts = []
    x, y = x0, y0
    for i, name in enumerate(names):
        w = 26 + 6.5 * len(name)
        if x + w > x0 + width and x > x0:
            x, y = x0, y + 16
        c = PALETTE[i % len(PALETTE)]
        parts.append(f'<rect x="{x:.1f}" y="{y - 8:.1f}" width="12" height="4" fill="{c}"/><text x="{x + 16:.1f}" y="{y - 3:.1f}" class="lg">{_e(name)}</text>')
        x += w
    return "".join(parts), y + 10


def line_chart(s: Series, *, title: str = "", square: bool = False, diagonal: bool = False, y_unit_interval: bool | None = None) -> str:
    """Lines ``y[name]`` over ``x`` (numeric axis when every x is a number, categories otherwise).

    ``None`` values break a line. ``diagonal`` draws the chance line of a ROC plot.
    """
    W, H = (380, 380) if square else (600, 300)
    ml, mr, mt, mb = 58, 16, 24, 44
    names = list(s.y)
    legend_svg, legend_h = _legend(names, ml, H + 16, W - ml - mr)
    total_h = legend_h + 4
    pw, ph = W - ml - mr, H - mt - mb
    xs_opt = [_num(v) for v in s.x]
    numeric = bool(s.x) and all(v is not None for v in xs_opt)
    xs_num = [v if v is not None else 0.0 for v in xs_opt]
    xlo, xhi = 0.0, 1.0
    if numeric:
        xlo, xhi = min(xs_num), max(xs_num)
        if square and xlo >= 0 and xhi <= 1:
            xlo, xhi = 0.0, 1.0
        if xhi == xlo:
            xlo, xhi = xlo - 0.5, xhi + 0.5

        def px(i: int) -> float:
            return ml + (xs_num[i] - xlo) / (xhi - xlo) * pw
    else:
        k = max(len(s.x), 1)

        def px(i: int) -> float:
            return ml + (i + 0.5) / k * pw

    allv = [v for ys in s.y.values() for v in (_num(x) for x in ys) if v is not None]
    ylo, yhi = (0.0, 1.0) if y_unit_interval else _y_range(allv)
    if y_unit_interval is None and allv and (min(allv) < 0 or max(allv) > 1):
        ylo, yhi = _y_range(allv)

    def py(v: float) -> float:
        return mt + (1 - (v - ylo) / (yhi - ylo)) * ph

    out = _frame(title or s.y_label, title, W, total_h, (ml, mt, pw, ph), ylo, yhi, py)
    if numeric:
        for t in nice_ticks(xlo, xhi, 6):
            x = ml + (t - xlo) / (xhi - xlo) * pw
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{mt}" y2="{mt + ph}" class="grid"/><text x="{x:.1f}" y="{mt + ph + 16}" class="tick" text-anchor="middle">{_fmt_tick(t)}</text>')
    else:
        for i, lab in enumerate(s.x):
            out.append(f'<text x="{px(i):.1f}" y="{mt + ph + 16}" class="tick" text-anchor="middle">{_e(lab)}</text>')
    if diagonal:
        out.append(f'<line x1="{ml}" y1="{mt + ph}" x2="{ml + pw}" y2="{mt}" class="diag"/>')
    for li, name in enumerate(names):
        c = PALETTE[li % len(PALETTE)]
        ys = [_num(v) for v in s.y[name]]
        segs: list[list[tuple[float, float, Any, float]]] = [[]]
        for i, v in enumerate(ys[: len(s.x)]):
            if v is None:
                segs.append([])
                continue
            segs[-1].append((px(i), py(v), s.x[i], v))
        for seg in segs:
            if len(seg) > 1:
                pts = " ".join(f"{a:.1f},{b:.1f}" for a, b, _, _ in seg)
                out.append(f'<polyline points="{pts}" fill="none" stroke="{c}" stroke-width="2"/>')
            if len(seg) <= 60:
                for a, b, xv, v in seg:
                    out.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="3" fill="{c}"><title>{_e(name)}: {_e(xv)} → {v:.4g}</title></circle>')
    out.append(f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" class="frame"/>')
    out.append(f'<text x="{ml + pw / 2:.1f}" y="{H - 8}" class="axis" text-anchor="middle">{_e(s.x_label)}</text>')
    out.append(f'<text x="14" y="{mt + ph / 2:.1f}" class="axis" text-anchor="middle" transform="rotate(-90 14 {mt + ph / 2:.1f})">{_e(s.y_label)}</text>')
    out.append(legend_svg)
    out.append("</svg>")
    return "".join(out)


_VALUE_WORDS = ("accuracy", "error", "ece", "rate", "auroc", "aupr", "loss", "value", "count", "score", "fraction")


def _heat_colour(t: float) -> str:
    """Sequential white -> dark blue scale for ``t`` in [0, 1]."""
    t = min(max(t, 0.0), 1.0)
    lo, hi = (247, 251, 255), (8, 48, 107)
    r, g, b = (round(lo[i] + (hi[i] - lo[i]) * t) for i in range(3))
    return f"rgb({r},{g},{b})"


#: the most cells a heat map draws (a 100-class confusion matrix, the largest the clean check records);
#: about 250 bytes of SVG per cell, so an edited or foreign scorecard cannot make a report of gigabytes
MAX_HEATMAP_CELLS = 10_000


def heatmap(s: Series, *, title: str = "") -> str:
    """Grid: ``rows`` x ``x`` cells, ``y[row]`` the row's values; each cell shows its value. A grid of
    more than :data:`MAX_HEATMAP_CELLS` cells is not drawn: a note says where its values are."""
    rows = list(s.rows or s.y.keys())
    cols = list(s.x)
    if len(rows) * len(cols) > MAX_HEATMAP_CELLS:
        note = (f"{len(rows)} x {len(cols)} grid ({len(rows) * len(cols):,} cells) is too large to draw "
                f"(at most {MAX_HEATMAP_CELLS:,}); its values are in the scorecard JSON")
        return (f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 640 40" width="640" height="40" role="img" aria-label="{_e(title or s.y_label)}">'
                + (f"<title>{_e(title)}</title>" if title else "") + f'<text x="8" y="24" class="axis">{_e(note)}</text></svg>')
    cw, ch = max(44, min(70, 520 // max(len(cols), 1))), 22
    ml = 24 + 7 * max((len(str(r)) for r in rows), default=4)
    mt, mb = 30, 40
    W = ml + cw * len(cols) + 16
    H = mt + ch * len(rows) + mb
    vals = [v for r in rows for v in (_num(x) for x in s.y.get(r, [])) if v is not None]
    integers = bool(vals) and all(float(v).is_integer() for v in vals) and max(vals) > 1
    label = s.y_label or ""
    value_label = label if any(w in label.lower() for w in _VALUE_WORDS) else "value"
    row_label = "" if value_label == label else label
    if integers and value_label == "value":
        value_label = "count"
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    if lo >= 0 and hi <= 1:
        lo, hi = 0.0, max(hi, 1e-9) if hi > 0 else 1.0
    span = (hi - lo) or 1.0
    out = [f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{_e(title or s.y_label)}">']
    if title:
        out.append(f"<title>{_e(title)}</title>")
    for j, c in enumerate(cols):
        out.append(f'<text x="{ml + cw * j + cw / 2:.1f}" y="{mt - 8}" class="tick" text-anchor="middle">{_e(c)}</text>')
    for i, r in enumerate(rows):
        y = mt + ch * i
        out.append(f'<text x="{ml - 6}" y="{y + ch / 2 + 4:.1f}" class="tick" text-anchor="end">{_e(r)}</text>')
        row = s.y.get(r, [])
        for j in range(len(cols)):
            v = _num(row[j]) if j < len(row) else None
            x = ml + cw * j
            if v is None:
                out.append(f'<rect x="{x}" y="{y}" width="{cw}" height="{ch}" class="na"/><text x="{x + cw / 2:.1f}" y="{y + ch / 2 + 4:.1f}" class="cell" text-anchor="middle">–</text>')
                continue
            t = (v - lo) / span
            fg = "#fff" if t > 0.55 else "#111"
            txt = f"{v:.0f}" if integers else f"{v:.3f}"
            out.append(
                f'<rect x="{x}" y="{y}" width="{cw}" height="{ch}" fill="{_heat_colour(t)}" stroke="#fff"><title>{_e(r)} · {_e(cols[j])}: {v:.4g}</title></rect>'
                f'<text x="{x + cw / 2:.1f}" y="{y + ch / 2 + 4:.1f}" class="cell" text-anchor="middle" fill="{fg}">{txt}</text>'
            )
    out.append(f'<text x="{ml + cw * len(cols) / 2:.1f}" y="{H - 20}" class="axis" text-anchor="middle">{_e(s.x_label)}</text>')
    out.append(f'<text x="{ml + cw * len(cols) / 2:.1f}" y="{H - 5}" class="lg" text-anchor="middle">colour: {_e(value_label)} from {lo:.3g} (light) to {hi:.3g} (dark)</text>')
    if row_label:
        out.append(f'<text x="10" y="{mt + ch * len(rows) / 2:.1f}" class="axis" text-anchor="middle" transform="rotate(-90 10 {mt + ch * len(rows) / 2:.1f})">{_e(row_label)}</text>')
    out.append("</svg>")
    return "".join(out)


def bar_chart(s: Series, *, title: str = "") -> str:
    """Grouped bars: one group per ``x`` value, one bar per ``y`` name."""
    W, H = 600, 300
    ml, mr, mt, mb = 58, 16, 24, 44
    pw, ph = W - ml - mr, H - mt - mb
    names = list(s.y)
    legend_svg, legend_h = _legend(names, ml, H + 16, pw)
    allv = [v for ys in s.y.values() for v in (_num(x) for x in ys) if v is not None]
    ylo, yhi = _y_range(allv)
    ylo = min(ylo, 0.0)

    def py(v: float) -> float:
        return mt + (1 - (v - ylo) / (yhi - ylo)) * ph

    k = max(len(s.x), 1)
    gw = pw / k
    bw = max(1.0, gw * 0.8 / max(len(names), 1))
    out = _frame(title or s.y_label, title, W, legend_h + 4, (ml, mt, pw, ph), ylo, yhi, py)
    step = max(1, k // 12)
    for i, lab in enumerate(s.x):
        x0 = ml + gw * i + gw * 0.1
        if i % step == 0:
            out.append(f'<text x="{ml + gw * (i + 0.5):.1f}" y="{mt + ph + 16}" class="tick" text-anchor="middle">{_e(_fmt_tick(lab) if _num(lab) is not None else lab)}</text>')
        for j, name in enumerate(names):
            vals = s.y[name]
            v = _num(vals[i]) if i < len(vals) else None
            if v is None:
                continue
            y0, y1 = py(max(v, 0.0)), py(min(v, 0.0))
            out.append(f'<rect x="{x0 + bw * j:.1f}" y="{y0:.1f}" width="{bw:.1f}" height="{max(y1 - y0, 0.5):.1f}" fill="{PALETTE[j % len(PALETTE)]}"><title>{_e(name)}: {_e(lab)} → {v:.4g}</title></rect>')
    out.append(f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" class="frame"/>')
    out.append(f'<text x="{ml + pw / 2:.1f}" y="{H - 8}" class="axis" text-anchor="middle">{_e(s.x_label)}</text>')
    out.append(f'<text x="14" y="{mt + ph / 2:.1f}" class="axis" text-anchor="middle" transform="rotate(-90 14 {mt + ph / 2:.1f})">{_e(s.y_label)}</text>')
    out.append(legend_svg)
    out.append("</svg>")
    return "".join(out)


def render_series(s: Series, *, title: str = "", name: str = "") -> str:
    """Dispatch on ``Series.kind``: ``line``, ``grid`` (heat map), ``roc``, ``bar``.

    A line series named ``reliability`` is drawn as a square reliability diagram with the diagonal
    of perfect calibration.
    """
    if s.kind == "line" and "reliability" in name.lower():
        return line_chart(s, title=title, square=True, diagonal=True, y_unit_interval=True)
    if s.kind == "grid":
        return heatmap(s, title=title)
    if s.kind == "roc":
        return line_chart(s, title=title, square=True, diagonal=True, y_unit_interval=True)
    if s.kind == "bar":
        return bar_chart(s, title=title)
    return line_chart(s, title=title)


def _frame(label: str, title: str | None, width: float, height: float, box: tuple[float, float, float, float], ylo: float, yhi: float, py: Callable[[float], float]) -> list[str]:
    """Opening of a plot: the <svg> element, its title, the plot area and the horizontal grid with y ticks."""
    ml, mt, pw, ph = box
    out = [f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height:.0f}" width="{width}" height="{height:.0f}" role="img" aria-label="{_e(label)}">']
    if title:
        out.append(f"<title>{_e(title)}</title>")
    out.append(f'<rect x="{ml}" y="{mt}" width="{pw}" height="{ph}" class="bg"/>')
    for t in nice_ticks(ylo, yhi):
        y = py(t)
        out.append(f'<line x1="{ml}" x2="{ml + pw}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/><text x="{ml - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">{_fmt_tick(t)}</text>')
    return out
