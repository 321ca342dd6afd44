"""Release-gate policies: a YAML file of rules on scorecard metric keys.

A policy (see ``reports/example-policy.yaml``)::

    version: 1
    audit:
      invalid: fail          # fail | inconclusive | allow   (default fail)
      suspect: allow         # fail | inconclusive | allow   (default allow: reported, not gating)
    checks:
      error: inconclusive    # a check that errored: fail | inconclusive | allow
      incomplete: inconclusive  # a killed/interrupted run (checks missing, no run.complete): fail | inconclusive | allow
    min_samples: 200         # default minimum sample count of every rule (optional)
    signature: required      # required | optional (default optional): the scorecard and the baseline
                             # must be signed by a trusted key (a rule that fails otherwise)
    rules:
      - metric: clean/accuracy
        op: ">="
        threshold: 0.90
        on: lower            # value | lower | upper  (end of the confidence interval)
      - metric: adversarial/pgd_linf/eps_0.0314/robust_accuracy
        op: ">="
        threshold: 0.40
      - metric: adversarial/pgd_linf/eps_0.0314/robust_accuracy
        max_drop: 0.02       # non-regression against --baseline
        mcnemar: {per_sample: robust, check: pgd, alpha: 0.05}

Keys are the scorecard's slash keys (:mod:`robustlab.metric_keys`; the same in MLflow). A policy
written for schema-1.x scorecards (``eps=0.0314``, ``clean/class=cat/accuracy``) keeps working: the
gate maps its keys with :meth:`Policy.in_key_schema` and the class names of the scorecard it gates.
Policies are parsed once, at the boundary, into frozen dataclasses and enums; anything malformed
raises :class:`~robustlab.errors.PolicyError` (exit code 2).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any

from ..errors import PolicyError
from ..parsing import E, as_integer, as_number, parse_enum


class Op(str, Enum):
    """Comparison of a rule: the observed value must satisfy ``observed OP threshold``."""

    GE = ">="
    LE = "<="

    def holds(self, observed: float, threshold: float) -> bool:
        return observed >= threshold if self is Op.GE else observed <= threshold


class Bound(str, Enum):
    """Which number of a metric a threshold rule compares: the point value or a CI end."""

    VALUE = "value"
    LOWER = "lower"
    UPPER = "upper"


class Action(str, Enum):
    """What an audit verdict or a failed check does to the gate."""

    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
    ALLOW = "allow"


class Requirement(str, Enum):
    """Whether the policy requires the gated scorecards to be signed by a trusted key."""

    REQUIRED = "required"
    OPTIONAL = "optional"


class Missing(str, Enum):
    """What a rule does when its metric is absent from the scorecard."""

    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"
    SKIP = "skip"


@dataclass(frozen=True)
class McNemarSpec:
    """Paired test on per-sample flags (``True`` = good, e.g. robust or correct)."""

    per_sample: str
    check: str | None = None
    alpha: float = 0.05


@dataclass(frozen=True)
class Rule:
    """One gate rule: a threshold rule, a regression rule, or both on one metric.

    Attributes:
        name: test-case name (JUnit); defaults to a readable form of the rule.
        metric: scorecard metric key.
        op, threshold, on: threshold part (``observed OP threshold``), ``on`` picks value or CI end.
        min_samples: the sample count behind the metric must reach this, otherwise inconclusive.
        max_drop: regression part: ``baseline - candidate <= max_drop`` when higher is better
            (``op`` ``>=`` or ``higher_is_better``), ``candidate - baseline <= max_drop`` otherwise.
        drop_on: which value of the candidate ``max_drop`` measures: ``value``, or the conservative
            end of its confidence interval (``lower`` when higher is better, ``upper`` otherwise), e.g.
            "the int8 variant's robust accuracy, lower confidence bound, at most 2 points below the base".
        mcnemar: regression part: exact McNemar test of per-sample flags against the baseline.
        if_missing: what an absent metric does.
    """

    name: str
    metric: str
    op: Op | None = None
    threshold: float | None = None
    on: Bound = Bound.VALUE
    min_samples: int | None = None
    max_drop: float | None = None
    drop_on: Bound = Bound.VALUE
    higher_is_better: bool = True
    mcnemar: McNemarSpec | None = None
    if_missing: Missing = Missing.FAIL

    @property
    def needs_baseline(self) -> bool:
        return self.max_drop is not None or self.mcnemar is not None


@dataclass(frozen=True)
class Policy:
    """A parsed gate policy."""

    rules: tuple[Rule, ...]
    audit_invalid: Action = Action.FAIL
    audit_suspect: Action = Action.ALLOW
    check_error: Action = Action.INCONCLUSIVE
    incomplete: Action = Action.INCONCLUSIVE
    signature: Requirement = Requirement.OPTIONAL
    source: str = ""

    def in_key_schema(self, class_names: "list[str] | None" = None) -> "Policy":
        """This policy with every metric key (and McNemar per-sample name) in the current key grammar:
        1.x keys are mapped by :func:`robustlab.metric_keys.upgrade_v1_key` with ``class_names``
        (those of the scorecard being gated); rule names stay as written."""
        from ..metric_keys import upgrade_v1_key

        def up(r: Rule) -> Rule:
            mc = replace(r.mcnemar, per_sample=upgrade_v1_key(r.mcnemar.per_sample, class_names)) if r.mcnemar is not None else None
            return replace(r, metric=upgrade_v1_key(r.metric, class_names), mcnemar=mc)

        return replace(self, rules=tuple(up(r) for r in self.rules))


_RULE_KEYS = {"name", "metric", "op", "threshold", "on", "min_samples", "max_drop", "drop_on", "higher_is_better", "mcnemar", "if_missing"}
_TOP_KEYS = {"version", "audit", "checks", "min_samples", "rules", "description", "signature"}


def _choice(cls: type[E], value: Any, where: str) -> E:
    """A policy field's closed set of values (letter case ignored, except for the operators)."""
    return parse_enum(cls, value, where, error=PolicyError, ignore_case=cls is not Op, hint="fix the policy file")


def _number(value: Any, where: str, *, integer: bool = False) -> float:
    """A policy number: YAML 1.1 reads ``1e-2`` as the string ``'1e-2'``, which means 0.01 here (as do
    ``'8/255'`` and ``1.0e+3`` for ``min_samples``); anything else that is not a finite number is refused."""
    try:
        v = float(as_integer(value)) if integer else as_number(value)
    except ValueError as exc:
        kind = "a non-negative integer such as 200 or 1e3" if integer else "a finite number such as 0.9, 1e-2 or 8/255"
        raise PolicyError(f"{where}: expected {kind}, got {value!r}; fix the policy file.") from exc
    if integer and v < 0:
        raise PolicyError(f"{where}: expected a non-negative integer, got {value!r}; fix the policy file.")
    return v


def _rule(raw: Any, i: int, default_min: int | None) -> Rule:
    where = f"rules[{i}]"
    if not isinstance(raw, dict):
        raise PolicyError(f"{where}: each rule must be a mapping with at least 'metric'; got {type(raw).__name__}.")
    if True in raw:  # YAML 1.1 reads a bare `on:` key as the boolean true
        raw = {("on" if k is True else k): v for k, v in raw.items()}
    unknown = sorted(set(map(str, raw)) - _RULE_KEYS)
    if unknown:
        raise PolicyError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(sorted(_RULE_KEYS))}.")
    metric = raw.get("metric")
    if not isinstance(metric, str) or not metric.strip():
        raise PolicyError(f"{where}: 'metric' must be a scorecard metric key such as 'clean/accuracy'.")
    metric = metric.strip()
    op = _choice(Op, raw["op"], f"{where}.op") if "op" in raw else None
    threshold = _number(raw["threshold"], f"{where}.threshold") if "threshold" in raw else None
    if (op is None) != (threshold is None):
        raise PolicyError(f"{where}: give both 'op' ('>=' or '<=') and 'threshold', or neither.")
    on = _choice(Bound, raw.get("on", "value"), f"{where}.on")
    if on is not Bound.VALUE and op is None:
        raise PolicyError(f"{where}: 'on: {on.value}' needs 'op' and 'threshold'.")
    ms = raw.get("min_samples", default_min)
    min_samples = int(_number(ms, f"{where}.min_samples", integer=True)) if ms is not None else None
    max_drop = _number(raw["max_drop"], f"{where}.max_drop") if "max_drop" in raw else None
    if max_drop is not None and max_drop < 0:
        raise PolicyError(f"{where}.max_drop must be >= 0 (a tolerated drop), got {max_drop}.")
    hib_raw = raw.get("higher_is_better", op is not Op.LE)
    if not isinstance(hib_raw, bool):
        raise PolicyError(f"{where}.higher_is_better must be true or false.")
    drop_on = _choice(Bound, raw.get("drop_on", "value"), f"{where}.drop_on")
    if drop_on is not Bound.VALUE and max_drop is None:
        raise PolicyError(f"{where}: 'drop_on: {drop_on.value}' needs 'max_drop'.")
    if drop_on is not Bound.VALUE and drop_on is not (Bound.LOWER if hib_raw else Bound.UPPER):
        raise PolicyError(f"{where}: 'drop_on: {drop_on.value}' is the optimistic end; use 'drop_on: {'lower' if hib_raw else 'upper'}' (the conservative end) or 'value'.")
    mc = raw.get("mcnemar")
    mcnemar: McNemarSpec | None = None
    if mc is not None:
        if isinstance(mc, str):
            mc = {"per_sample": mc}
        if not isinstance(mc, dict) or not isinstance(mc.get("per_sample"), str):
            raise PolicyError(f"{where}.mcnemar needs 'per_sample': the name of a per-sample flag list (e.g. 'robust').")
        extra = sorted(set(mc) - {"per_sample", "check", "alpha"})
        if extra:
            raise PolicyError(f"{where}.mcnemar: unknown key(s) {', '.join(map(repr, extra))}; allowed: per_sample, check, alpha.")
        alpha = _number(mc.get("alpha", 0.05), f"{where}.mcnemar.alpha")
        if not 0 < alpha < 1:
            raise PolicyError(f"{where}.mcnemar.alpha must be in (0, 1), got {alpha}.")
        mcnemar = McNemarSpec(per_sample=mc["per_sample"], check=mc.get("check"), alpha=alpha)
    if op is None and max_drop is None and mcnemar is None:
        raise PolicyError(f"{where}: rule on {metric!r} tests nothing; add 'op' + 'threshold', 'max_drop' or 'mcnemar'.")
    if_missing = _choice(Missing, raw.get("if_missing", "fail"), f"{where}.if_missing")
    if raw.get("name") is not None and not isinstance(raw["name"], str):  # `name: [a]` or `name: 1.10` (read as 1.1) is not what was meant
        raise PolicyError(f"{where}.name must be text, got {raw['name']!r:.60}; write it as a plain string (quote it: name: \"...\").")
    name = raw.get("name") or _default_name(metric, op, threshold, on, max_drop, mcnemar)
    return Rule(
        name=str(name), metric=metric, op=op, threshold=threshold, on=on, min_samples=min_samples,
        max_drop=max_drop, drop_on=drop_on, higher_is_better=hib_raw, mcnemar=mcnemar, if_missing=if_missing,
    )


def _default_name(metric: str, op: Op | None, threshold: float | None, on: Bound, max_drop: float | None, mc: McNemarSpec | None) -> str:
    parts = []
    if op is not None:
        lhs = metric if on is Bound.VALUE else f"{on.value}({metric})"
        parts.append(f"{lhs} {op.value} {threshold:g}")
    if max_drop is not None:
        parts.append(f"{metric} drop <= {max_drop:g}")
    if mc is not None:
        parts.append(f"McNemar({mc.per_sample}) alpha={mc.alpha:g}")
    return "; ".join(parts)


def parse_policy(raw: Any, *, source: str = "") -> Policy:
    """Parse a loaded YAML document into a :class:`Policy`."""
    if not isinstance(raw, dict):
        raise PolicyError(f"policy {source or ''} must be a YAML mapping with a 'rules' list.")
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise PolicyError(f"policy: unknown key(s) {', '.join(map(repr, unknown))}; allowed: {', '.join(sorted(_TOP_KEYS))}.")
    if raw.get("version", 1) != 1:
        raise PolicyError(f"policy version {raw.get('version')!r} is not supported; use 'version: 1'.")
    default_min = raw.get("min_samples")
    if default_min is not None:
        default_min = int(_number(default_min, "min_samples", integer=True))
    rules_raw = raw.get("rules") or []
    if not isinstance(rules_raw, list):
        raise PolicyError("policy: 'rules' must be a list of rules.")
    audit = raw.get("audit") or {}
    checks = raw.get("checks") or {}
    if not isinstance(audit, dict) or not set(audit) <= {"invalid", "suspect"}:
        raise PolicyError("policy: 'audit' must be a mapping with keys 'invalid' and/or 'suspect'.")
    if not isinstance(checks, dict) or not set(checks) <= {"error", "incomplete"}:
        raise PolicyError("policy: 'checks' must be a mapping with keys 'error' and/or 'incomplete'.")
    rules = tuple(_rule(r, i, default_min) for i, r in enumerate(rules_raw))
    names = [r.name for r in rules]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise PolicyError(f"policy: duplicate rule name(s) {', '.join(map(repr, dup))}; give each rule a unique 'name'.")
    return Policy(
        rules=rules,
        audit_invalid=_choice(Action, audit.get("invalid", "fail"), "audit.invalid"),
        audit_suspect=_choice(Action, audit.get("suspect", "allow"), "audit.suspect"),
        check_error=_choice(Action, checks.get("error", "inconclusive"), "checks.error"),
        incomplete=_choice(Action, checks.get("incomplete", "inconclusive"), "checks.incomplete"),
        signature=_choice(Requirement, raw.get("signature", "optional"), "signature"),
        source=source,
    )


def load_policy(path: str | Path) -> Policy:
    """Read and parse a policy YAML file (``PolicyError`` on any problem)."""
    from ..yamlio import load_or_raise

    p = Path(path)
    if not p.is_file():
        raise PolicyError(f"policy file {p} does not exist; pass a YAML policy (see reports/example-policy.yaml).")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"policy file {p} is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8.") from exc
    raw = load_or_raise(text, what=f"policy file {p}", error=PolicyError, fix="fix its syntax")
    return parse_policy(raw, source=str(p))
