"""How the report writes values: 4 decimals, yes/no, an em dash for none, n/a for NaN; p-values with
significant digits; a gate row's observed value and threshold with the digits that tell them apart;
nested provenance as dotted rows."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["fmt_value", "fmt_pvalue", "fmt_pair", "flatten_rows"]


def fmt_pvalue(v: Any) -> str:
    """A p-value with significant digits (4.8e-07, not 0.0000); other values as :func:`fmt_value`."""
    if isinstance(v, float) and math.isfinite(v) and 0 < abs(v) < 1e-3:
        return f"{v:.2g}"
    return fmt_value(v)


def fmt_pair(a: Any, b: Any) -> tuple[str, str]:
    """Two values of one row (a gate's observed value and threshold) as the report shows them, with
    more digits where 4 decimals would show a failing 0.886362 against 0.88637 as 0.8864 and 0.8864."""
    fa, fb = fmt_value(a), fmt_value(b)
    if fa == fb and isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and a != b and math.isfinite(a) and math.isfinite(b):
        from ..gates.rules import distinct

        return distinct(float(a), float(b), digits=5)
    return fa, fb


def fmt_value(v: Any) -> str:
    """A value as the report shows it: 4 decimals, yes/no, an em dash for none, n/a for NaN/inf."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if not math.isfinite(v):
            return "n/a"
        return f"{v:.4f}" if abs(v) < 1000 else f"{v:.6g}"
    return str(v)


def flatten_rows(d: Any, prefix: str = "", *, max_list: int = 12) -> list[tuple[str, str]]:
    """``(dotted key, shown value)`` rows of a nested dict (long lists shortened)."""
    rows: list[tuple[str, str]] = []
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and v:
                rows += flatten_rows(v, key + ".", max_list=max_list)
            elif isinstance(v, list) and len(v) > max_list:
                rows.append((key, f"{len(v)} entries: {', '.join(map(str, v[:6]))}, …"))
            elif isinstance(v, list):
                rows.append((key, ", ".join(map(fmt_value, v)) if v else "—"))
            else:
                rows.append((key, fmt_value(v)))
    return rows
