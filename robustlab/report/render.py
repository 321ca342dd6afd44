"""Render a scorecard as one self-contained HTML file (inline CSS and SVG, no JavaScript, no network).

Reads only a :class:`~robustlab.scorecard.Scorecard` (and optionally a gate result and a signature
verification); it never imports torch. Jinja2 with autoescaping on: every string from the scorecard
is escaped; only the SVG built (and escaped) by :mod:`robustlab.report.svg` is marked safe.
"""

from __future__ import annotations

import functools

import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..metric_keys import parse
from ..scorecard import Scorecard, Status, Verdict, atomic_write_text
from .formatting import flatten_rows as flatten_rows, fmt_pair as fmt_pair, fmt_pvalue as fmt_pvalue, fmt_value as fmt_value  # re-exported
from .svg import render_series
from .untested import family_of, not_tested

if TYPE_CHECKING:
    from ..gates.rules import GateReport
    from ..signing import Verification

FAMILIES: tuple[tuple[str, str, str], ...] = (
    ("clean", "Clean accuracy and calibration", "Top-1 accuracy on unmodified inputs, and how well the model's confidence matches its accuracy (expected calibration error, reliability diagram)."),
    ("adversarial", "Adversarial robustness", "Robust accuracy: the fraction of all evaluated points that are classified correctly and for which no attack of the check found a misclassified input inside the epsilon ball and the model's bounds (clean errors count as non-robust; pointwise worst case over the attacks)."),
    ("corruption", "Common corruptions", "Top-1 error under the corruptions of Hendrycks & Dietterich (2019) at severities 1 to 5; mCE is the mean corruption error over the benchmark corruptions, normalised by a baseline when one is named."),
    ("ood", "Out-of-distribution detection", "Scores are oriented so that higher means more likely OOD. AUROC, AUPR and FPR at 95% TPR separate in-distribution test data from each OOD set."),
    ("certify", "Certified robustness (randomized smoothing)", "Cohen et al. (2019): certified L2 radius R = sigma * Phi^-1(pA_lower), abstaining when pA_lower < 0.5; certified accuracy at radius r is the fraction of all points certified, correct and with R >= r."),
)
_HEADLINE_SUFFIXES = ("accuracy", "robust_accuracy", "mce", "mce_partial", "mean_error", "auroc", "fpr95", "fpr_at_95tpr", "certified_accuracy", "ece")

GATE_DEFINITIONS = {
    "gate: confidence interval rules": "A rule 'on: lower' compares the lower end of the metric's recorded confidence interval (Wilson score interval at 95% unless the metric states otherwise) with the threshold, so a pass holds with that confidence rather than only for the point estimate.",
    "gate: McNemar regression test": "Exact (binomial) McNemar test on per-sample flags paired by sample id: with b samples good in the baseline and bad in the candidate and c the reverse, p = P(X >= b), X ~ Binomial(b + c, 1/2); a regression fails the gate when b > c and p < alpha.",
    "exit codes": "0 all gates pass, 1 a gate failed, 2 usage or input error, 3 inconclusive (too few samples, missing interval or baseline, suspect audit when the policy says so).",
}


@dataclass
class MetricRow:
    key: str
    value: str
    interval: str
    n: str
    definition: str = ""
    label: str = ""  # the key as shown: class indices also name the class (``class_3 [cat]``)


@dataclass
class Plot:
    name: str
    svg: Any


@dataclass
class Pivot:
    """Metrics that share a set of final key segments, as a table: one row per key prefix."""

    columns: list[str]
    rows: list[tuple[str, list[MetricRow | None]]]


def _pivot(rows: list[MetricRow]) -> tuple[list[Pivot], list[MetricRow]]:
    """Group ``prefix/suffix`` keys whose prefixes share the same suffix set (>= 2 prefixes, >= 2
    suffixes) into tables, e.g. ``ood/<detector>/<set>/{auroc, aupr_in, ...}``; return the rest flat."""
    by_prefix: dict[str, dict[str, MetricRow]] = {}
    for m in rows:
        pk = parse(m.key)
        if len(pk.segments) > 1:
            by_prefix.setdefault(pk.parent, {})[pk.metric] = m
    groups: dict[tuple[str, ...], list[str]] = {}
    for pre, cells in by_prefix.items():
        if len(cells) >= 2:
            groups.setdefault(tuple(cells), []).append(pre)
    pivots: list[Pivot] = []
    used: set[str] = set()
    for cols, prefixes in groups.items():
        if len(prefixes) < 2:
            continue
        pivots.append(Pivot(list(cols), [(pre, [by_prefix[pre].get(c) for c in cols]) for pre in prefixes]))
        used.update(f"{pre}/{c}" for pre in prefixes for c in cols)
    return pivots, [m for m in rows if m.key not in used]


@dataclass
class CheckView:
    id: str
    check: str
    status: str
    reason: str
    seconds: float
    params: list[tuple[str, str]]
    metrics: list[MetricRow]
    pivots: list["Pivot"]
    detail_metrics: list[MetricRow]
    plots: list[Plot]
    audit: list[dict[str, Any]]
    notes: list[str]
    header: str = ""


def _check_header(c: Any) -> str:
    """One line shown under a check's title: for corruption checks, the protocol and its source
    (scorecards from before protocols existed say so)."""
    if c.check != "corruption":
        return ""
    proto = c.params.get("protocol_resolved")
    if not proto:
        return "Protocol: not recorded (scorecard made before corruption protocols; on-the-fly corruptions used the ImageNet-C constants)."
    return f"Protocol: {proto} (requested: {c.params.get('protocol', 'auto')}) — {c.params.get('protocol_source', '')}"


@dataclass
class FamilyView:
    key: str
    title: str
    intro: str
    checks: list[CheckView] = field(default_factory=list)


_DETAIL_SEGMENTS = frozenset({"perturbation", "tuned", "tuning", "fit"})


def _is_detail(key: str) -> bool:
    """Per-class, per-severity and diagnostic keys go to the collapsible full table."""
    pk = parse(key)
    return (len(pk.segments) > 5 or pk.class_index is not None or pk.severity is not None or pk.after is not None
            or any(s in _DETAIL_SEGMENTS or s.startswith("class_") for s in pk.segments[1:]))


def _metric_rows(c: Any, class_names: "list[str] | None" = None) -> list[MetricRow]:
    rows = []
    for k, v in c.metrics.items():
        iv = c.intervals.get(k)
        ci = f"[{iv.low:.4f}, {iv.high:.4f}] {iv.level:.0%} {iv.method}" if iv is not None and math.isfinite(iv.low) and math.isfinite(iv.high) else ""
        n = c.counts.get(k)
        rows.append(MetricRow(k, fmt_value(v), ci, str(n) if n is not None else "", c.definitions.get(k, ""), parse(k).label(class_names)))
    return rows


def _check_view(c: Any, class_names: "list[str] | None" = None) -> CheckView:
    from markupsafe import Markup

    plots = []
    for name, s in c.series.items():
        try:
            svg = render_series(s, title=f"{c.id}: {name}", name=name)
        except (ValueError, TypeError, ZeroDivisionError, IndexError, OverflowError) as exc:  # malformed series: show why, keep the report
            from html import escape

            svg = f'<p class="warn">plot {escape(name)} could not be drawn ({escape(str(exc))})</p>'
        plots.append(Plot(name, Markup(svg)))
    audit = [
        {"name": a.name, "verdict": a.verdict.value, "message": a.message, "evidence": flatten_rows(a.evidence, max_list=8)}
        for a in c.audit
    ]
    rows = _metric_rows(c, class_names)
    pivots, flat = _pivot([m for m in rows if not _is_detail(m.key)])
    return CheckView(
        id=c.id, check=c.check, status=c.status.value, reason=c.reason, seconds=float(c.seconds or 0.0),
        params=flatten_rows(c.params), metrics=flat, pivots=pivots, detail_metrics=[m for m in rows if _is_detail(m.key)],
        plots=plots, audit=audit, notes=list(c.notes), header=_check_header(c),
    )


def _headline_rank(key: str) -> tuple[int, int]:
    """Which of a measure's keys heads the report: a certified figure at the CLI's primary radius 0.5
    first, then at other positive radii, radius 0 (no robustness at all) last; then the shortest key."""
    last = key.rsplit("/", 1)[-1]
    if "_at_r_" in last:
        try:
            r = float(last.rsplit("_at_r_", 1)[1])
        except ValueError:
            r = float("nan")
        return (0 if r == 0.5 else 2 if r == 0 else 1), len(key)
    return 0, len(key)


def _headline(card: Scorecard, *, limit: int = 8) -> list[tuple[str, str, str]]:
    """Key figures: per check and measure (``x_at_r_<g>`` counts as ``x``), the shortest key (e.g. the
    primary ``adversarial/<id>/robust_accuracy`` rather than one epsilon), first one on ties."""
    out: list[tuple[str, str, str]] = []
    for c in card.checks:
        picked: dict[str, str] = {}
        for k in c.metrics:
            last = parse(k).measure
            if last == "accuracy" and k.count("/") > 1:  # per-class / per-corruption accuracies are not headline figures
                continue
            if last in _HEADLINE_SUFFIXES and (last not in picked or _headline_rank(k) < _headline_rank(picked[last])):
                picked[last] = k
        for k in picked.values():
            iv = c.intervals.get(k)
            ci = f"[{iv.low:.3f}, {iv.high:.3f}]" if iv is not None and math.isfinite(iv.low) and math.isfinite(iv.high) else ""
            out.append((parse(k).label(card.class_names()), fmt_value(c.metrics[k]), ci))
    return out[:limit]


def build_context(card: Scorecard, *, gate: "GateReport | None" = None, verification: "Verification | None" = None, command: str | None = None,
                  warnings: "list[str] | None" = None) -> dict[str, Any]:
    """Everything the template shows, as plain data (``warnings``: lines shown above the verdict)."""
    variants, dropped = variants_view(card.run.get("variants"))
    if dropped:
        warnings = [*(warnings or []), f"run.variants is malformed: {dropped}; those parts are not shown (the scorecard was not written by robustlab as is)."]
    fam_views = {k: FamilyView(k, t, i) for k, t, i in FAMILIES}
    other = FamilyView("other", "Other checks", "Checks outside the standard families.")
    for c in card.checks:
        fam_views.get(family_of(c), other).checks.append(_check_view(c, card.class_names()))
    families = [f for f in fam_views.values()] + ([other] if other.checks else [])
    audit_counts = {v.value: sum(a.verdict is v for c in card.checks for a in c.audit) for v in Verdict}
    status_counts = {s.value: sum(c.status is s for c in card.checks) for s in Status}
    definitions: dict[str, str] = {}
    for c in card.checks:
        for k, v in c.definitions.items():
            definitions.setdefault(k, v)
    definitions.update(GATE_DEFINITIONS)
    data = {k: v for k, v in card.data.items() if k != "ids"}
    if isinstance(card.data.get("ids"), list):
        data["sample ids"] = f"{len(card.data['ids'])} recorded (first: {', '.join(map(str, card.data['ids'][:5]))})"
    run = dict(card.run)
    cmd = command or run.get("command") or ""
    from ..gates.rules import completeness_gaps

    gaps = completeness_gaps(card)
    if gaps:  # as loud as the gate's "all checks completed" rule, also when no policy was applied
        warnings = [*(warnings or []), "this run is incomplete: " + "; ".join(gaps) + ". The figures below cover only the checks present; rerun with --resume to finish it."]
    errored = [c.id for c in card.checks if c.status is Status.ERROR]
    if gate is not None:
        overall = gate.outcome.value
    elif audit_counts["invalid"]:
        overall = "invalid"
    elif gaps or errored:
        overall = "inconclusive"  # what the CLI's exit code 3 says: part of the suite is missing
    else:
        overall = "not-gated"
    return {
        "card": card,
        "title": f"Robustness report: {card.model.get('spec', 'model')}",
        "generated_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "overall": overall,
        "gate": gate,
        "gate_counts": {o.value: sum(r.outcome is o for r in gate.results) for o in type(gate.outcome)} if gate is not None else {},
        "verification": verification,
        "signed": bool(card.signature),
        "audit_counts": audit_counts,
        "status_counts": status_counts,
        "headline": _headline(card),
        "provenance": [
            ("Model", flatten_rows(card.model)),
            ("Data", flatten_rows(data)),
            ("Suite", flatten_rows(card.suite)),
            ("Run", flatten_rows({k: v for k, v in run.items() if k not in ("command", "variants")})),
            ("Environment", flatten_rows(card.environment)),
            ("Tool", flatten_rows({**card.tool, "schema_version": card.schema_version})),
        ],
        "command": cmd,
        "timings": flatten_rows(card.timings),
        "families": families,
        "definitions": _group_definitions(definitions),
        "not_tested": not_tested(card),
        "warnings": list(warnings or []),
        "variants": variants,
    }


def _num(v: Any) -> "float | int | None":
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _text(v: Any) -> str:
    return v if isinstance(v, str) else ("" if v is None else json.dumps(v, default=str)[:200])


def _pair(v: Any) -> "list[float | int | None] | None":
    return [_num(v[0]), _num(v[1])] if isinstance(v, list) and len(v) == 2 else None


def variants_view(raw: Any) -> "tuple[dict[str, Any] | None, str]":
    """``run.variants`` (written by ``evaluate --variants``) as the template reads it: every field present and of
    its type, whatever the file holds. Returns (view or None, what was dropped as malformed, or "")."""
    if raw is None:
        return None, ""
    if not isinstance(raw, dict) or not isinstance(raw.get("base"), dict) or not isinstance(raw.get("variants"), list):
        return None, "it is not a mapping with a 'base' mapping and a 'variants' list"
    sizes = ("file_bytes", "deployed_bytes", "weight_sparsity", "cpu_latency_ms_per_image")
    base = raw["base"]
    view: dict[str, Any] = {"base": {"spec": _text(base.get("spec")), **{k: _num(base.get(k)) for k in sizes}}, "variants": []}
    bad = 0
    for v in raw["variants"]:
        if not isinstance(v, dict):
            bad += 1
            continue
        comp = v.get("compression")
        audit = [a for a in v.get("audit") or [] if isinstance(a, dict)] if isinstance(v.get("audit"), list) else []
        metrics = [m for m in v.get("metrics") or [] if isinstance(m, dict)] if isinstance(v.get("metrics"), list) else []
        flags = [f for f in v.get("mcnemar_vs_base") or [] if isinstance(f, dict)] if isinstance(v.get("mcnemar_vs_base"), list) else []
        not_run = [n for n in v.get("not_run") or [] if isinstance(n, dict)] if isinstance(v.get("not_run"), list) else []
        view["variants"].append({
            "name": _text(v.get("name")), "spec": _text(v.get("spec")),
            "compression": {"method": _text(comp.get("method"))} if isinstance(comp, dict) and "method" in comp else {},
            **{k: _num(v.get(k)) for k in sizes},
            "audit": [{k: _text(a.get(k)) for k in ("check", "name", "verdict", "message")} for a in audit],
            "metrics": [{"metric": _text(m.get("metric")), "base": _num(m.get("base")), "base_ci": _pair(m.get("base_ci")), "variant": _num(m.get("variant")),
                         "variant_ci": _pair(m.get("variant_ci")), "delta": _num(m.get("delta"))} for m in metrics],
            "mcnemar_vs_base": [{"flags": _text(f.get("flags")), **{k: _num(f.get(k)) for k in ("lost", "gained", "n", "p_two_sided")}} for f in flags],
            "not_run": [{k: _text(n.get(k)) for k in ("check", "status", "reason")} for n in not_run],
        })
    return view, (f"{bad} variant entr{'y is' if bad == 1 else 'ies are'} not mappings" if bad else "")


def _group_definitions(definitions: dict[str, str], *, show: int = 6) -> list[tuple[list[str], int, str]]:
    """One row per distinct definition text: (first ``show`` keys, number of keys not shown, text)."""
    by_text: dict[str, list[str]] = {}
    for k in sorted(definitions):
        by_text.setdefault(definitions[k], []).append(k)
    rows = [(keys[:show], max(0, len(keys) - show), text) for text, keys in by_text.items()]
    return sorted(rows, key=lambda r: r[0][0])


@functools.cache  # one compiled template per process (jinja reloads it if the file changes)
def _env() -> Any:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    env = Environment(
        loader=FileSystemLoader(str(Path(__file__).with_name("templates"))),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["fmt"] = fmt_value
    env.globals["fmt_pair"] = fmt_pair
    env.filters["pvalue"] = fmt_pvalue
    return env


def compile_template() -> None:
    """Compile the report template now (a warm launcher does it once, before forking its jobs)."""
    _env().get_template("report.html.j2")

def render_report(card: Scorecard, *, gate: "GateReport | None" = None, verification: "Verification | None" = None, command: str | None = None,
                  warnings: "list[str] | None" = None) -> str:
    """The report as an HTML string.

    Args:
        card: the scorecard (the only source of numbers).
        gate: a gate evaluation to show in the verdict section (``None``: no policy applied).
        verification: the signature verification state (``None``: not verified; the report then says
            whether the scorecard carries a signature at all).
        command: the command line to show when the scorecard does not record one.
        warnings: lines shown prominently above the verdict (e.g. a baseline made with other settings).
    """
    return str(_env().get_template("report.html.j2").render(**build_context(card, gate=gate, verification=verification, command=command, warnings=warnings)))


def write_report(card: Scorecard, path: str | Path, **kwargs: Any) -> Path:
    """Render and write atomically; returns the path."""
    return atomic_write_text(Path(path), render_report(card, **kwargs))
