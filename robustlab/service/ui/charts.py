"""Headline metrics of a model across its versions: one inline SVG per family (the report's
:func:`~robustlab.report.svg.line_chart`, so all text is escaped there), with the 95% interval
drawn as its low and high lines, and the same numbers in a table."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ...scorecard import Scorecard

#: (family label, key prefix, key suffix, preferred key); the preferred key, else the shortest
#: key matching prefix and suffix that most versions have.
FAMILIES = (
    ("clean accuracy", "clean/", "/accuracy", "clean/accuracy"),
    ("robust accuracy", "adversarial/", "/robust_accuracy", None),
    ("corruption accuracy", "corruption/", "accuracy", "corruption/mean_accuracy"),
    ("OOD AUROC", "ood/", "/auroc", None),
    ("certified accuracy", "certify/", "", None),
)


@dataclass(frozen=True)
class Point:
    value: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True)
class Family:
    """One headline family across versions: its metric key, one point per version, the SVG."""

    label: str
    key: str
    points: tuple[Point, ...]
    svg: str


def _matches(key: str, prefix: str, suffix: str) -> bool:
    if "/class_" in key or "/class/" in key:
        return False
    if prefix == "certify/":
        return key.startswith(prefix) and "certified_accuracy" in key
    return key.startswith(prefix) and key.endswith(suffix)


def _pick(keysets: list[set[str]], prefix: str, suffix: str, preferred: str | None) -> str | None:
    counts: dict[str, int] = {}
    for ks in keysets:
        for k in ks:
            if _matches(k, prefix, suffix):
                counts[k] = counts.get(k, 0) + 1
    if not counts:
        return None
    if preferred in counts:
        return preferred
    return min(counts, key=lambda k: (-counts[k], len(k), k))


def families(labels: list[str], cards: list["Scorecard | None"]) -> list[Family]:
    """One :class:`Family` per headline family some version has; ``cards[i]`` is version
    ``labels[i]``'s latest scorecard (``None``: not evaluated)."""
    from ...report.svg import line_chart
    from ...scorecard import Series

    metrics = [c.in_key_schema().metrics() if c is not None else {} for c in cards]
    intervals = [c.in_key_schema().intervals() if c is not None else {} for c in cards]
    out = []
    for label, prefix, suffix, preferred in FAMILIES:
        key = _pick([set(m) for m in metrics], prefix, suffix, preferred)
        if key is None:
            continue
        pts = []
        for m, iv in zip(metrics, intervals):
            v = m.get(key)
            ci = iv.get(key)
            pts.append(Point(v, ci.low if ci else None, ci.high if ci else None))
        y: dict[str, list[float | None]] = {key: [p.value for p in pts]}
        if any(p.low is not None for p in pts):
            y["95% interval, low"] = [p.low for p in pts]
            y["95% interval, high"] = [p.high for p in pts]
        series = Series(x=list(labels), y=y, x_label="version", y_label=label)
        out.append(Family(label, key, tuple(pts), line_chart(series, title=f"{label} across versions", y_unit_interval=True)))
    return out
