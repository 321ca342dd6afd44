"""Apply a :class:`~robustlab.gates.policy.Policy` to a scorecard (and optionally a baseline).

Outcomes combine into an exit code: any failed rule gives 1, otherwise any inconclusive rule gives
3, otherwise 0 (usage and input errors raise and exit with 2 before this point).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Iterable

from ..scorecard import Scorecard, Verdict
from .mcnemar import is_flag_list, paired_mcnemar
from .policy import Action, Bound, Missing, Op, Policy, Rule
from .protocols import baseline_mismatches


class Outcome(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
    SKIPPED = "skipped"


_RANK = {Outcome.SKIPPED: 0, Outcome.PASS: 1, Outcome.INCONCLUSIVE: 2, Outcome.FAIL: 3}

#: similarity (difflib's ratio) from which a missing metric key is taken for a misspelling of a present one
NEAR_KEY = 0.85

#: exit codes of the CLI
EXIT_PASS, EXIT_FAIL, EXIT_USAGE, EXIT_INCONCLUSIVE = 0, 1, 2, 3


@dataclass(frozen=True)
class RuleResult:
    """Result of one rule (one JUnit test case)."""

    name: str
    kind: str  # threshold | regression | audit | checks
    outcome: Outcome
    message: str
    metric: str = ""
    observed: float | None = None
    threshold: float | None = None
    baseline: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class GateReport:
    """All rule results of one gate evaluation."""

    results: tuple[RuleResult, ...]
    policy_source: str = ""
    baseline_source: str = ""

    @property
    def outcome(self) -> Outcome:
        if not self.results:
            return Outcome.PASS
        worst = max((r.outcome for r in self.results), key=_RANK.__getitem__)
        return Outcome.PASS if worst is Outcome.SKIPPED else worst

    @property
    def exit_code(self) -> int:
        return {Outcome.PASS: EXIT_PASS, Outcome.FAIL: EXIT_FAIL, Outcome.INCONCLUSIVE: EXIT_INCONCLUSIVE}[self.outcome]

    def count(self, outcome: Outcome) -> int:
        return sum(r.outcome is outcome for r in self.results)


def _worst(a: Outcome, b: Outcome) -> Outcome:
    return a if _RANK[a] >= _RANK[b] else b


def _action_outcome(action: Action) -> Outcome:
    return {Action.FAIL: Outcome.FAIL, Action.INCONCLUSIVE: Outcome.INCONCLUSIVE, Action.ALLOW: Outcome.PASS}[action]


def _fmt(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"


def _sample_count(card: Scorecard, key: str) -> tuple[int | None, str]:
    counts = card.counts()
    if key in counts:
        return int(counts[key]), "metric count"
    n = card.data.get("n")
    if isinstance(n, int):
        return n, "data set size (no count recorded for this metric)"
    return None, ""


def _threshold_part(rule: Rule, card: Scorecard, value: float) -> tuple[Outcome, str, float | None]:
    assert rule.op is not None and rule.threshold is not None
    if rule.on is Bound.VALUE:
        observed: float | None = value
        what = "value"
    else:
        iv = card.intervals().get(rule.metric)
        if iv is None or math.isnan(iv.low) or math.isnan(iv.high):
            return Outcome.INCONCLUSIVE, f"no confidence interval recorded for {rule.metric}; use 'on: value' or record an interval", None
        observed = iv.low if rule.on is Bound.LOWER else iv.high
        what = f"{rule.on.value} end of the {iv.level:.0%} {iv.method} interval"
    if observed is None or math.isnan(observed):
        return Outcome.INCONCLUSIVE, f"{rule.metric} is not a number (NaN)", observed
    ok = rule.op.holds(observed, rule.threshold)
    verb = "meets" if ok else "violates"
    shown, limit = distinct(observed, float(rule.threshold))
    limit = limit if len(limit) > len(f"{rule.threshold:g}") else f"{rule.threshold:g}"
    return (Outcome.PASS if ok else Outcome.FAIL), f"{what} {shown} {verb} {rule.op.value} {limit}", observed


def _flags(card: Scorecard, name: str, check: str | None) -> tuple[list[Any] | None, str]:
    found = [(c.id, c.per_sample[name]) for c in card.checks if name in c.per_sample and (check is None or c.id == check)]
    if not found:
        return None, f"no per-sample list {name!r}" + (f" in check {check!r}" if check else "")
    if len(found) > 1:
        return None, f"per-sample list {name!r} exists in checks {', '.join(i for i, _ in found)}; name one with 'check:'"
    flags = found[0][1]
    if not is_flag_list(flags):
        return None, f"per-sample list {name!r} is not a list of true/false flags"
    return flags, ""


def sample_ids_of(card: Scorecard, n: int) -> list[Any]:
    ids = card.data.get("ids")
    if isinstance(ids, list) and len(ids) == n:
        return ids
    return list(range(n))  # positional pairing; the message notes it when ids are missing


def _regression_part(rule: Rule, card: Scorecard, value: float, baseline: Scorecard) -> tuple[Outcome, str, float | None, dict[str, Any]]:
    details: dict[str, Any] = {}
    outcome = Outcome.PASS
    msgs: list[str] = []
    base_value = baseline.metrics().get(rule.metric)
    if rule.max_drop is not None:
        if base_value is None or math.isnan(base_value):
            outcome = _worst(outcome, Outcome.INCONCLUSIVE)
            msgs.append(f"baseline has no value for {rule.metric}")
        else:
            cand, what = value, ""
            if rule.drop_on is not Bound.VALUE:
                iv = card.intervals().get(rule.metric)
                end = None if iv is None else (iv.low if rule.drop_on is Bound.LOWER else iv.high)
                cand, what = (float("nan") if end is None else end), f" ({rule.drop_on.value} end of the candidate's interval {_fmt(end)})"
            if math.isnan(cand):
                outcome = _worst(outcome, Outcome.INCONCLUSIVE)
                msgs.append(f"no confidence interval recorded for {rule.metric}; use 'drop_on: value'")
            else:
                drop = (base_value - cand) if rule.higher_is_better else (cand - base_value)
                details["drop"] = drop
                ok = drop <= rule.max_drop + 1e-12
                outcome = _worst(outcome, Outcome.PASS if ok else Outcome.FAIL)
                msgs.append(f"{'drop' if rule.higher_is_better else 'rise'} {_fmt(drop)}{what} vs baseline {_fmt(base_value)} ({'within' if ok else 'exceeds'} {rule.max_drop:g})")
    if rule.mcnemar is not None:
        spec = rule.mcnemar
        cf, why_c = _flags(card, spec.per_sample, spec.check)
        bf, why_b = _flags(baseline, spec.per_sample, spec.check)
        if cf is None or bf is None:
            outcome = _worst(outcome, Outcome.INCONCLUSIVE)
            msgs.append(f"McNemar not possible: {why_c or why_b} ({'candidate' if cf is None else 'baseline'})")
        else:
            res = paired_mcnemar(sample_ids_of(card, len(cf)), cf, sample_ids_of(baseline, len(bf)), bf)
            if not isinstance(card.data.get("ids"), list) or not isinstance(baseline.data.get("ids"), list):
                msgs.append("paired by position: a scorecard lacks data.ids")
            details.update({"paired": res.n, "lost": res.lost, "gained": res.gained, "p_regression": res.p_regression})
            if res.n == 0:  # nothing to compare (different data?): never a pass
                outcome = _worst(outcome, Outcome.INCONCLUSIVE)
                msgs.append(f"McNemar: 0 of {len(cf)} samples pair with the baseline's {len(bf)} (different data?); evaluate both on the same data")
            elif rule.min_samples is not None and res.n < rule.min_samples:
                outcome = _worst(outcome, Outcome.INCONCLUSIVE)
                msgs.append(f"only {res.n} paired samples (< {rule.min_samples})")
            else:
                bad = res.lost > res.gained and res.p_regression < spec.alpha
                outcome = _worst(outcome, Outcome.FAIL if bad else Outcome.PASS)
                msgs.append(
                    f"McNemar on {spec.per_sample!r}: {res.lost} lost, {res.gained} gained of {res.n} paired, "
                    f"one-sided p={res.p_regression:.3g} {'<' if bad else '>='} alpha {spec.alpha:g}"
                    + (" (significant regression)" if bad else "")
                )
    return outcome, "; ".join(msgs), base_value, details


def _owner(card: Scorecard, rule: Rule) -> str | None:
    """The id of the check a rule's numbers come from (its McNemar ``check``, else the check holding its metric)."""
    if rule.mcnemar is not None and rule.mcnemar.check:
        return rule.mcnemar.check
    return next((c.id for c in card.checks if rule.metric in c.metrics), None)


def misspelt(metric: str, keys: "Iterable[str]") -> str | None:
    """The present key ``metric`` most likely misspells: same path up to the last segment, a last segment
    without digits (a budget, class, radius or rate of another value is another metric, not a typo) within
    :data:`NEAR_KEY` of a present one. None when there is none."""
    head, _, leaf = metric.rpartition("/")
    if any(ch.isdigit() for ch in leaf):
        return None
    leaves = [k.rpartition("/")[2] for k in keys if k.rpartition("/")[0] == head]
    near = difflib.get_close_matches(leaf, leaves, n=1, cutoff=NEAR_KEY)
    if not near:
        return None
    return f"{head}/{near[0]}" if head else near[0]


def _evaluate_rule(rule: Rule, card: Scorecard, baseline: Scorecard | None) -> RuleResult:
    kind = "regression" if rule.op is None else ("threshold" if not rule.needs_baseline else "threshold+regression")
    metrics = card.metrics()
    if rule.metric not in metrics:
        out = {Missing.FAIL: Outcome.FAIL, Missing.INCONCLUSIVE: Outcome.INCONCLUSIVE, Missing.SKIP: Outcome.SKIPPED}[rule.if_missing]
        near = misspelt(rule.metric, metrics)
        if near:  # a misspelt key is never skipped silently
            return RuleResult(rule.name, kind, _worst(out, Outcome.INCONCLUSIVE), f"metric {rule.metric!r} is not in the scorecard; did you mean {near!r}? fix the policy",
                              metric=rule.metric, threshold=rule.threshold)
        return RuleResult(rule.name, kind, out, f"metric {rule.metric!r} is not in the scorecard (was its check run?)", metric=rule.metric, threshold=rule.threshold)
    value = metrics[rule.metric]
    outcome = Outcome.PASS
    msgs: list[str] = []
    details: dict[str, Any] = {"value": value}
    n, n_src = _sample_count(card, rule.metric)
    if n is not None:
        details["n"] = n
    if rule.min_samples is not None:
        if n is None:
            outcome = Outcome.INCONCLUSIVE
            msgs.append(f"sample count unknown (min_samples {rule.min_samples})")
        elif n < rule.min_samples:
            outcome = Outcome.INCONCLUSIVE
            msgs.append(f"only {n} samples (< min_samples {rule.min_samples}; {n_src})")
    observed: float | None = value
    if rule.op is not None:
        o, m, observed = _threshold_part(rule, card, value)
        outcome = _worst(outcome, o)
        msgs.append(m)
    base_value: float | None = None
    if rule.needs_baseline:
        if baseline is None:
            outcome = _worst(outcome, Outcome.INCONCLUSIVE)
            msgs.append("regression part needs a baseline; pass --baseline SCORECARD or MLflow run id")
        elif mism := baseline_mismatches(card, baseline, _owner(card, rule)):
            # other images, another protocol or other numerics: a drop or a McNemar pairing would compare unlike things
            outcome = _worst(outcome, Outcome.INCONCLUSIVE)
            msgs.append(f"not comparable with the baseline ({'; '.join(mism)}); evaluate the candidate and the baseline on the same data with the same settings")
            details["baseline_mismatches"] = mism
        else:
            o, m, base_value, d = _regression_part(rule, card, value, baseline)
            outcome = _worst(outcome, o)
            msgs.append(m)
            details.update(d)
    return RuleResult(rule.name, kind, outcome, "; ".join(x for x in msgs if x), metric=rule.metric, observed=observed, threshold=rule.threshold, baseline=base_value, details=details)


def _audit_results(card: Scorecard, policy: Policy) -> list[RuleResult]:
    out: list[RuleResult] = []
    for verdict, action in ((Verdict.INVALID, policy.audit_invalid), (Verdict.SUSPECT, policy.audit_suspect)):
        items = [(c.id, a) for c in card.checks for a in c.audit if a.verdict is verdict]
        listing = "; ".join(f"{cid}/{a.name}: {a.message}" for cid, a in items)
        if not items:
            outcome, msg = Outcome.PASS, f"no audit item is {verdict.value}"
        else:
            outcome = _action_outcome(action)
            msg = f"{len(items)} audit item(s) {verdict.value} (policy: {action.value}): {listing}"
        out.append(RuleResult(f"validity audit: no {verdict.value} items", "audit", outcome, msg, details={"items": [f"{cid}/{a.name}" for cid, a in items]}))
    return out


def completeness_gaps(card: Scorecard) -> list[str]:
    """What makes ``card`` the record of an unfinished run (empty: it is complete): suite checks
    missing from it, no list of the suite's checks, ``run.complete`` not true (killed or interrupted)."""
    planned = card.suite.get("checks")
    present = {c.id for c in card.checks}
    missing = [str(c) for c in planned if str(c) not in present] if isinstance(planned, list) else []
    gaps = []
    if missing:
        gaps.append(f"{len(missing)} suite check(s) missing: {', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""))
    if not isinstance(planned, list):
        gaps.append("the scorecard does not list the suite's checks (suite.checks)")
    if card.run.get("complete") is not True:
        gaps.append("run.complete is " + ("false" if card.run.get("complete") is False else "absent") + " (killed or interrupted?)")
    return gaps


def distinct(a: float | None, b: float | None, *, digits: int = 4) -> tuple[str, str]:
    """``a`` and ``b`` formatted with ``digits`` significant digits, or more (up to 12) until the
    text tells them apart: a failed ``>= 0.88637`` must not read ``0.8864 >= 0.8864``."""
    def f(v: float | None, d: int) -> str:
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{d}g}"

    d = digits
    while d < 12 and a is not None and b is not None and a != b and f(a, d) == f(b, d):
        d += 1
    return f(a, d), f(b, d)


def _checks_result(card: Scorecard, policy: Policy) -> RuleResult:
    """"All checks completed": no check errored, and the run was not killed or interrupted (every
    check the suite lists is present and ``run.complete`` is true)."""
    name = "all checks completed"
    errored = card.errored_checks()
    gaps = completeness_gaps(card)
    outcome, msgs = Outcome.PASS, []
    if gaps:
        outcome = _action_outcome(policy.incomplete)
        msgs.append(f"incomplete run (policy: {policy.incomplete.value}): {'; '.join(gaps)}; rerun with --resume to finish it")
    if errored:
        outcome = _worst(outcome, _action_outcome(policy.check_error))
        msgs.append(f"{len(errored)} check(s) errored (policy: {policy.check_error.value}): " + "; ".join(f"{c.id}: {c.reason or 'error'}" for c in errored))
    if not msgs:
        return RuleResult(name, "checks", Outcome.PASS, f"{len(card.checks)} check(s), all of the suite's, none errored; the run completed")
    planned = card.suite.get("checks")
    missing = [str(c) for c in planned if str(c) not in {x.id for x in card.checks}] if isinstance(planned, list) else []
    return RuleResult(name, "checks", outcome, "; ".join(msgs), details={"missing": missing, "errored": [c.id for c in errored]})


def evaluate_policy(card: Scorecard, policy: Policy, *, baseline: Scorecard | None = None, baseline_source: str = "") -> GateReport:
    """Evaluate every rule of ``policy`` on ``card`` (and ``baseline`` for regression rules).

    Keys are compared in the current grammar: a 1.x policy or baseline is mapped with the class names
    of ``card`` (a 2.0 scorecard gates against a 1.x baseline and the reverse)."""
    from ..errors import RobustlabError

    for what, c in (("the scorecard", card), (f"the baseline {baseline_source}".rstrip(), baseline)):
        try:
            if c is not None:
                c.validate_numbers()
        except ValueError as exc:
            raise RobustlabError(f"{what} cannot be gated: its numbers contradict each other ({exc}); regenerate it with `robustlab evaluate`.") from exc
    card = card.in_key_schema()
    baseline = baseline.in_key_schema() if baseline is not None else None
    policy = policy.in_key_schema(card.class_names())
    results = [_evaluate_rule(r, card, baseline) for r in policy.rules]
    results += _audit_results(card, policy)
    results.append(_checks_result(card, policy))
    return GateReport(results=tuple(results), policy_source=policy.source, baseline_source=baseline_source)


__all__ = ["EXIT_FAIL", "EXIT_INCONCLUSIVE", "EXIT_PASS", "EXIT_USAGE", "GateReport", "Op", "Outcome", "RuleResult", "evaluate_policy"]
