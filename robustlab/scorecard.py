"""The scorecard: the single source of truth of a run.

Pure data and JSON (no torch import), so that tracking, the report and the gates read it without
loading any model. Metric keys are stable slash paths built and parsed by
:mod:`robustlab.metric_keys` (``clean/accuracy``, ``adversarial/pgd_linf/eps_0.0314/robust_accuracy``);
the same key is used in the scorecard, in MLflow and in gate policies.

Schema 2.0 introduced that grammar. :meth:`Scorecard.from_dict` (and so :meth:`Scorecard.read`)
maps the keys of a 1.x scorecard (``eps=0.0314``, ``class=cat``, ``fpr@95tpr``) in memory with
:func:`robustlab.metric_keys.upgrade_v1_key`, using the card's class names; the file and the dict
passed in are left as they are, so a signed 1.x scorecard still verifies.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Iterable, cast

__all__ = [
    "SCHEMA_VERSION", "AuditItem", "CheckResult", "Interval", "Scorecard", "Series", "Status", "Verdict", "worst_verdict",
    # re-exported from robustlab.jsonio for existing importers
    "atomic_write_text", "json_safe_text", "loads_strict", "read_strict_json",
]

from .jsonio import atomic_write_text, dumps_compact, json_safe_text, loads_strict, read_strict_json

SCHEMA_VERSION = "2.0"


class Status(str, Enum):
    OK = "ok"
    SKIPPED = "skipped"
    ERROR = "error"


class Verdict(str, Enum):
    """Verdict of one validity-audit item."""

    VALID = "valid"
    SUSPECT = "suspect"
    INVALID = "invalid"


#: Severity of each verdict, least to most severe (also the ``.../audit/verdict`` metric's code).
VERDICT_SEVERITY: dict[Verdict, int] = {Verdict.VALID: 0, Verdict.SUSPECT: 1, Verdict.INVALID: 2}


def worst_verdict(verdicts: Iterable[Verdict]) -> Verdict | None:
    """The most severe of ``verdicts`` (``invalid`` > ``suspect`` > ``valid``); ``None`` when there
    are none. The one place where verdicts are aggregated (audits, MLflow tags)."""
    return max(verdicts, key=VERDICT_SEVERITY.__getitem__, default=None)


@dataclass(frozen=True)
class Interval:
    """A confidence interval ``[low, high]`` at ``level`` by ``method`` (e.g. Wilson)."""

    low: float
    high: float
    level: float = 0.95
    method: str = "wilson"


@dataclass(frozen=True)
class Series:
    """A curve or grid for the report: ``x`` values and one or more named ``y`` lines.

    For a grid (heat map), ``x`` are column labels, ``rows`` are row labels and each ``y`` entry is
    one row, keyed by its row label.
    """

    x: list[Any]
    y: dict[str, list[float | None]]
    x_label: str = ""
    y_label: str = ""
    kind: str = "line"  # line | grid | bar | roc
    rows: list[str] | None = None


@dataclass(frozen=True)
class AuditItem:
    """One item of a validity audit: a named test, its verdict and the evidence behind it."""

    name: str
    verdict: Verdict
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class CheckResult:
    """What one check of a suite produced. Checks never log to MLflow or render: they return this."""

    id: str
    check: str
    status: Status = Status.OK
    reason: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, Interval] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)  # sample count behind a metric key
    series: dict[str, Series] = field(default_factory=dict)
    per_sample: dict[str, list[Any]] = field(default_factory=dict)  # aligned with data.ids
    definitions: dict[str, str] = field(default_factory=dict)
    audit: list[AuditItem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add_metric(
        self,
        key: str,
        value: float,
        *,
        interval: Interval | None = None,
        n: int | None = None,
    ) -> None:
        self.metrics[key] = float(value)
        if interval is not None:
            self.intervals[key] = interval
        if n is not None:
            self.counts[key] = int(n)


@dataclass
class Scorecard:
    """A whole run: provenance plus one :class:`CheckResult` per suite entry."""

    tool: dict[str, Any]
    model: dict[str, Any]
    data: dict[str, Any]
    suite: dict[str, Any]
    environment: dict[str, Any]
    run: dict[str, Any]
    checks: list[CheckResult] = field(default_factory=list)
    schema_version: str = SCHEMA_VERSION
    timings: dict[str, float] = field(default_factory=dict)
    signature: dict[str, Any] | None = None

    # -- access -----------------------------------------------------------------------------
    def errored_checks(self) -> "list[CheckResult]":
        """The checks whose status is ``error`` (the gate's ``checks.error`` rule; exit 3 without a policy)."""
        return [c for c in self.checks if c.status is Status.ERROR]

    def metrics(self) -> dict[str, float]:
        """All metrics of all checks, by slash key."""
        out: dict[str, float] = {}
        for c in self.checks:
            out.update(c.metrics)
        return out

    def intervals(self) -> dict[str, Interval]:
        out: dict[str, Interval] = {}
        for c in self.checks:
            out.update(c.intervals)
        return out

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.checks:
            out.update(c.counts)
        return out

    def check(self, check_id: str) -> CheckResult | None:
        return next((c for c in self.checks if c.id == check_id), None)

    def class_names(self) -> list[str] | None:
        """The names behind ``class_<i>`` key segments: the model's class names, else the data set's."""
        return _class_names({"model": self.model, "data": self.data})

    def in_key_schema(self) -> "Scorecard":
        """This card as :meth:`read` would give it back: every key in the current grammar (a check
        whose producer still writes 1.x keys is mapped like a 1.x file). The card itself is unchanged."""
        return Scorecard.from_dict(self.to_dict())

    # -- JSON -------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return cast("dict[str, Any]", _clean(asdict(self)))

    def to_json(self, *, indent: int | None = 1) -> str:
        """JSON text; with ``indent``, lists of numbers, strings and booleans (per-sample arrays,
        series, labels) stay on one line, so the file grows by a few bytes per image and check,
        not by a line per value (the content is the same as ``json.dumps``)."""
        if indent is None:
            return json.dumps(self.to_dict(), sort_keys=False, allow_nan=False)
        return dumps_compact(self.to_dict(), indent, 0)

    def write(self, path: str | os.PathLike[str]) -> Path:
        """Write atomically (temp file + rename), so a crash never leaves half a scorecard."""
        return atomic_write_text(Path(path), self.to_json())

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Scorecard":
        """A scorecard from its JSON dict (not modified); keys of schema 1.x are upgraded to 2.0,
        keys already in the 2.0 grammar are kept (the upgrade is the identity on them)."""
        from .metric_keys import upgrade_v1_check

        version = str(d.get("schema_version", SCHEMA_VERSION))
        if version.split(".")[0] not in ("1", "2"):
            raise ValueError(f"schema_version {version!r} is not one this robustlab reads (1.x, 2.x); upgrade robustlab")
        names = _class_names(d)
        checks = [_check_from_dict(upgrade_v1_check(c, names) if isinstance(c, dict) else c) for c in d.get("checks", [])]
        return cls(
            tool=d.get("tool", {}),
            model=d.get("model", {}),
            data=d.get("data", {}),
            suite=d.get("suite", {}),
            environment=d.get("environment", {}),
            run=d.get("run", {}),
            checks=checks,
            schema_version=SCHEMA_VERSION,
            timings=d.get("timings", {}),
            signature=d.get("signature"),
        )

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> "Scorecard":
        from .errors import RobustlabError

        p = Path(path)
        if not str(path):  # Path("") is the current folder
            raise RobustlabError("the scorecard path is empty; pass the scorecard.json that `robustlab evaluate` wrote.")
        if not p.is_file():
            from .errors import path_problem

            raise RobustlabError(f"scorecard {p} {path_problem(p)}; pass the scorecard.json that `robustlab evaluate` wrote.")
        d = read_strict_json(p)
        if not isinstance(d, dict):
            raise RobustlabError(f"{p} is not a robustlab scorecard (expected a JSON object); pass the scorecard.json that `robustlab evaluate` wrote.")
        try:
            card = cls.from_dict(d)
            card.validate()
        except (TypeError, KeyError, ValueError, AttributeError) as exc:
            raise RobustlabError(f"{p} is not a valid robustlab scorecard ({' '.join(str(exc).split())[:200]}); regenerate it with `robustlab evaluate`.") from exc
        return card

    def validate(self) -> None:
        """Raise ``ValueError``/``TypeError`` when a field has the wrong type (a hand-edited or foreign file)."""
        for name in ("tool", "model", "data", "suite", "environment", "run", "timings"):
            if not isinstance(getattr(self, name), dict):
                raise TypeError(f"field {name!r} must be an object")
        if self.signature is not None and not isinstance(self.signature, dict):
            raise TypeError("field 'signature' must be an object")
        for c in self.checks:
            if not isinstance(c.id, str) or not isinstance(c.check, str) or not isinstance(c.reason, str):
                raise TypeError("a check's id, check and reason must be strings")
            for fname in ("params", "counts", "per_sample", "definitions"):
                if not isinstance(getattr(c, fname), dict):
                    raise TypeError(f"check {c.id!r}: {fname!r} must be an object")
            if not isinstance(c.notes, list) or not all(isinstance(n, str) for n in c.notes):
                raise TypeError(f"check {c.id!r}: 'notes' must be a list of strings")
            if not all(isinstance(v, str) for v in c.definitions.values()):
                raise TypeError(f"check {c.id!r}: definitions must be strings")
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in c.counts.values()):
                raise TypeError(f"check {c.id!r}: counts must be integers")
            if not all(isinstance(v, list) for v in c.per_sample.values()):
                raise TypeError(f"check {c.id!r}: per_sample entries must be lists")
            for iv in c.intervals.values():
                if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (iv.low, iv.high, iv.level)):
                    raise TypeError(f"check {c.id!r}: interval bounds must be numbers")
            for sr in c.series.values():
                if not isinstance(sr.x, list) or not isinstance(sr.y, dict) or not all(isinstance(v, list) for v in sr.y.values()):
                    raise TypeError(f"check {c.id!r}: series must hold lists")
            if isinstance(c.seconds, bool) or not isinstance(c.seconds, (int, float)):
                raise TypeError(f"check {c.id!r}: 'seconds' must be a number")

    def validate_numbers(self) -> None:
        """Raise ``ValueError`` where the numbers contradict each other (what no run writes, so a hand edit or
        another tool): two checks with one id, a metric key two checks report, a fraction outside [0, 1], an
        interval with ends out of order, a level outside (0, 1), or a binomial interval that does not hold its
        value. The gate calls it on the candidate and the baseline; ``verify`` and ``report`` read such a file
        (to show that its signature no longer matches)."""
        _check_unique(self.checks)
        for c in self.checks:
            for k, iv in c.intervals.items():
                _check_interval(c.id, k, iv, c.metrics.get(k))


#: Interval methods whose interval always holds its point estimate (binomial proportions).
CONTAINING_METHODS = frozenset({"wilson", "clopper-pearson", "beta"})

#: How far a recorded value may stray from its interval or from [0, 1] (float rounding).
ROUNDING = 1e-9


def _check_interval(check_id: str, k: str, iv: "Interval", value: float | None) -> None:
    """Raise ``ValueError`` for an interval no run produces: ends out of order, a level outside (0, 1), or a
    binomial interval (:data:`CONTAINING_METHODS`) that does not hold the metric's value; a gate reading its
    lower end would otherwise certify a number the scorecard does not support."""
    low, high = float(iv.low), float(iv.high)
    if not 0.0 < float(iv.level) < 1.0:
        raise ValueError(f"check {check_id!r}: the interval of {k} has level {iv.level}, not in (0, 1)")
    if math.isnan(low) or math.isnan(high):
        return
    if low > high + ROUNDING:
        raise ValueError(f"check {check_id!r}: the interval of {k} is [{low}, {high}], its low end above its high end")
    if value is not None and math.isfinite(value) and str(iv.method).lower() in CONTAINING_METHODS and not low - ROUNDING <= value <= high + ROUNDING:
        raise ValueError(f"check {check_id!r}: {k} = {value} lies outside its {iv.method} interval [{low}, {high}]")


def _check_unique(checks: "list[CheckResult]") -> None:
    """Raise ``ValueError`` for two checks with one id, a metric key reported by two checks (a gate would
    read one of them silently; runs refuse both), or a fraction metric outside [0, 1]."""
    from .metric_keys import is_fraction

    ids: set[str] = set()
    owner: dict[str, str] = {}
    for c in checks:
        if c.id in ids:
            raise ValueError(f"two checks have the id {c.id!r}")
        ids.add(c.id)
        for k, v in c.metrics.items():
            if k in owner:
                raise ValueError(f"metric {k} is reported by checks {owner[k]!r} and {c.id!r}")
            owner[k] = c.id
            if math.isfinite(v) and is_fraction(k) and not -ROUNDING <= v <= 1.0 + ROUNDING:
                raise ValueError(f"check {c.id!r}: {k} = {v} is a fraction but lies outside [0, 1]")


def _metric_value(key: str, v: Any) -> float:
    if v is None:
        return math.nan
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"metric {key!r} must be a number, got {type(v).__name__}")
    return float(v)


def _class_names(d: dict[str, Any]) -> list[str] | None:
    """The class names a 1.x key's ``class=NAME`` refers to: the model's, else the data set's."""
    for section, field_name in (("model", "class_names"), ("data", "classes")):
        sec = d.get(section)
        names = sec.get(field_name) if isinstance(sec, dict) else None
        if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
            return names
    return None


def _check_from_dict(c: dict[str, Any]) -> CheckResult:
    return CheckResult(
        id=c["id"],
        check=c["check"],
        status=Status(c.get("status", "ok")),
        reason=c.get("reason", ""),
        params=c.get("params", {}),
        metrics={k: _metric_value(k, v) for k, v in c.get("metrics", {}).items()},
        intervals={k: Interval(**v) for k, v in c.get("intervals", {}).items()},
        counts=c.get("counts", {}),
        series={k: Series(**v) for k, v in c.get("series", {}).items()},
        per_sample=c.get("per_sample", {}),
        definitions=c.get("definitions", {}),
        audit=[AuditItem(name=a["name"], verdict=Verdict(a["verdict"]), message=a["message"], evidence=a.get("evidence", {})) for a in c.get("audit", [])],
        notes=c.get("notes", []),
        seconds=c.get("seconds", 0.0),
    )


def _clean(obj: Any) -> Any:
    """Make an ``asdict`` tree JSON-safe: enums to values, non-finite floats to None, lone
    surrogates (non-UTF-8 bytes of paths) to visible escapes."""
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, str):
        return json_safe_text(obj)
    if isinstance(obj, dict):
        return {json_safe_text(str(k)): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
