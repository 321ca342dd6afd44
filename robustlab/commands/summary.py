"""The terminal summary table printed at the end of a run."""

from __future__ import annotations

from ..metric_keys import at_radius, matches, parse
from ..scorecard import CheckResult, Scorecard

#: Headline metrics per family (key patterns for :func:`robustlab.metric_keys.matches`); everything else is in the scorecard.
HEADLINES = (
    *(f"clean/{m}" for m in ("accuracy", "ece", "worst_class_accuracy")),
    *(f"adversarial/*/{m}" for m in ("robust_accuracy", "clean_accuracy", "median_min_norm", "bf16_flipped")),
    *(f"corruption/{m}" for m in ("mean_accuracy", "mean_error", "mce", "relative_mce", "mce_partial", "ece", "worst/accuracy")),
    *(f"corruption/*/{m}" for m in ("mean_accuracy", "mce", "relative_mce", "worst/accuracy")),
    "ood/id/accuracy",
    *(f"ood/{d}{g}/{m}" for d in ("*", "*/*") for g in ("/near", "/far") for m in ("auroc", "fpr95")),
    *(f"certify/sigma_*/{m}" for m in ("smoothed_accuracy", "average_certified_radius", "abstention_rate", at_radius("certified_accuracy", 0.5))),
)
_VERDICTS = {0.0: "valid", 1.0: "suspect", 2.0: "invalid"}


def headline_keys(c: CheckResult, limit: int = 12) -> list[str]:
    keys = [k for k in c.metrics if matches(k, *HEADLINES)]
    if not keys:
        keys = sorted((k for k in c.metrics if parse(k).class_index is None), key=lambda k: (len(parse(k).segments), k))
    return keys[:limit]


def summary_table(card: Scorecard) -> str:
    """A plain-text table: check, status, the check's headline metrics with their intervals."""
    lines = [f"robustlab {card.tool.get('version')}  model {card.model.get('spec')}  data {card.data.get('spec')} (n={card.data.get('n')})  suite {card.suite.get('name')}  seed {card.run.get('seed')}"]
    rows: list[tuple[str, str, str, str]] = []
    for c in card.checks:
        if c.status.value != "ok":
            rows.append((c.id, c.status.value, c.reason[:90], ""))
            continue
        for i, k in enumerate(headline_keys(c)):
            iv = c.intervals.get(k)
            ci = f"[{iv.low:.4f}, {iv.high:.4f}]" if iv else ""
            rows.append((c.id if i == 0 else "", "ok" if i == 0 else "", k, f"{c.metrics[k]:.4f} {ci}".strip()))
        bad = [a for a in c.audit if a.verdict.value != "valid"]
        if c.audit:
            worst = "invalid" if any(a.verdict.value == "invalid" for a in bad) else ("suspect" if bad else "valid")
            rows.append(("", "", "validity audit", f"{worst}" + (f" ({', '.join(a.name for a in bad)})" if bad else "")))
    w = [max([len(r[i]) for r in rows] + [len(h)]) for i, h in enumerate(("check", "status", "metric", "value"))]
    fmt = "  ".join(f"{{:<{x}}}" for x in w)
    lines.append(fmt.format("check", "status", "metric", "value").rstrip())
    lines.append(fmt.format(*("-" * x for x in w)).rstrip())
    lines += [fmt.format(*r).rstrip() for r in rows]
    return "\n".join(lines)
