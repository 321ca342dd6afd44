"""The terminal summary table printed at the end of a run."""

from __future__ import annotations

from ..scorecard import Scorecard


def summary_table(card: Scorecard, *, max_per_check: int = 8) -> str:
    """A plain-text table: check, status, the check's headline metrics with their intervals."""
    lines = [f"robustlab {card.tool.get('version')}  model {card.model.get('spec')}  data {card.data.get('spec')} (n={card.data.get('n')})  suite {card.suite.get('name')}  seed {card.run.get('seed')}"]
    rows: list[tuple[str, str, str, str]] = []
    for c in card.checks:
        if c.status.value != "ok":
            rows.append((c.id, c.status.value, c.reason[:70], ""))
            continue
        keys = [k for k in c.metrics if "/class=" not in k and "/s" not in k.rsplit("/", 2)[-2:][0][:2]]
        keys = sorted(keys, key=lambda k: (k.count("/"), k))[:max_per_check]
        for i, k in enumerate(keys):
            iv = c.intervals.get(k)
            ci = f"[{iv.low:.4f}, {iv.high:.4f}]" if iv else ""
            rows.append((c.id if i == 0 else "", "ok" if i == 0 else "", k, f"{c.metrics[k]:.4f} {ci}".strip()))
        for a in c.audit:
            if a.verdict.value != "valid":
                rows.append(("", "", f"audit {a.name}", f"{a.verdict.value.upper()}: {a.message[:60]}"))
    w = [max([len(r[i]) for r in rows] + [len(h)]) for i, h in enumerate(("check", "status", "metric", "value"))]
    fmt = "  ".join(f"{{:<{x}}}" for x in w)
    lines.append(fmt.format("check", "status", "metric", "value"))
    lines.append(fmt.format(*("-" * x for x in w)))
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(lines)
