"""The metric-key grammar: one torch-free module builds and parses every scorecard metric key.

A key is a slash path of segments made only of the characters MLflow accepts as they are
(letters, digits, ``_ - .`` and space), so the same string is used in the scorecard, in MLflow and
in gate policies, with no remapping and no hashing. Segments that carry a value are written
``name_value``:

=============================  =====================================================================
segment                        meaning
=============================  =====================================================================
``eps_<g>``                    an attack budget, :func:`number` (``eps_0.03137``, ``eps_1e-05``, ``eps_1e30``)
``class_<i>``                  class index ``i`` (names live in the scorecard's ``model.class_names``)
``s<k>``                       corruption severity ``k`` (1-5)
``after_<attack>``             cumulative robust accuracy after an ensemble member (AutoAttack)
``fpr_at_<p>tpr``              false-positive rate at ``p``% true-positive rate (OOD)
``sigma_<g>``                  randomized-smoothing noise level (certify), :func:`number`
``<metric>_at_r_<g>``          a certify metric at L2 radius ``g`` (``certified_accuracy_at_r_0.5``)
=============================  =====================================================================

Definitions (``CheckResult.definitions``) may name a family of keys with the wildcards ``*`` (any
name), ``eps_*``, ``class_*`` and ``s*``: ``corruption/*/s*/accuracy``. Metric keys never hold a ``*``.

Examples: ``adversarial/pgd_linf/eps_0.03137/robust_accuracy``,
``adversarial/autoattack_linf/eps_0.03137/after_apgd-ce/robust_accuracy``,
``clean/class_3/accuracy``, ``corruption/gaussian_noise/s3/accuracy``, ``ood/energy/svhn/fpr_at_95tpr``.

Scorecards of schema 1.x wrote ``eps=<g>``, ``class=<name>``, ``after=<attack>``, ``sigma=<g>``,
``certified_accuracy@r=<g>``, ``robust@eps=<g>`` and definitions such as ``corruption/<name>/s<k>/accuracy``;
:func:`upgrade_v1_key` maps such a key to this grammar (``Scorecard.read`` and gate policies use it),
so old scorecards and policies keep working.
"""

from __future__ import annotations

import re
from fnmatch import fnmatchcase
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

#: The scorecard schema that introduced this grammar.
KEY_SCHEMA = "2.0"

#: MLflow's limit on a metric key's length.
MAX_KEY_LENGTH = 250

_SEGMENT = re.compile(r"^[A-Za-z0-9_.\- ]+$")
_EPS = re.compile(r"^eps_([0-9.eE+\-]+|\*)$")
_CLASS = re.compile(r"^class_(\d+|\*)$")
_SEVERITY = re.compile(r"^s(\d+)$")
_AFTER = re.compile(r"^after_(.+)$")
_SIGMA = re.compile(r"^sigma_([0-9.eE+\-]+)$")
_AT_RADIUS = re.compile(r"^(.+)_at_r_([0-9.eE+\-]+)$")


class MetricKeyError(ValueError):
    """A key or segment that breaks the grammar (an internal error: callers build keys with this module)."""


def is_legal_segment(seg: str) -> bool:
    """True when ``seg`` is a non-empty segment MLflow accepts as is (not ``.`` or ``..``)."""
    return bool(_SEGMENT.match(seg)) and seg not in (".", "..") and seg == seg.strip()


def legal_segment(text: str) -> str:
    """``text`` with every character MLflow does not accept replaced by ``_`` (for names that come
    from users or data, such as an OOD data set's spec); never empty."""
    s = re.sub(r"[^A-Za-z0-9_.\- ]", "_", str(text)).strip() or "_"
    return "_" if s in (".", "..") else s


def key(*segments: str) -> str:
    """Join segments into a key; raises :class:`MetricKeyError` on an illegal segment or a key too long for MLflow."""
    for s in segments:
        if not is_legal_segment(s):
            raise MetricKeyError(f"illegal metric-key segment {s!r} (allowed: letters, digits, '_', '-', '.', space)")
    k = "/".join(segments)
    if len(k) > MAX_KEY_LENGTH:
        raise MetricKeyError(f"metric key longer than {MAX_KEY_LENGTH} characters: {k[:60]}...")
    return k


def pattern(*segments: str) -> str:
    """Like :func:`key`, but segments may hold the ``*`` wildcard: names a family of keys in definitions."""
    for s in segments:
        if not is_legal_segment(s.replace("*", "x")):
            raise MetricKeyError(f"illegal metric-key pattern segment {s!r}")
    return "/".join(segments)


def child(parent: str, *segments: str) -> str:
    """The key ``parent/segment/...`` (``parent`` is a key; segments are checked like :func:`key`'s)."""
    return key(*parent.split("/"), *segments)


def is_legal_key(k: str) -> bool:
    return 0 < len(k) <= MAX_KEY_LENGTH and all(is_legal_segment(s) for s in k.split("/"))


def is_legal_pattern(k: str) -> bool:
    """A key, or a family of keys written with the ``*`` wildcard (definitions only)."""
    return is_legal_key(k.replace("*", "x"))


def illegal_keys(keys: "Iterable[str]", *, patterns: bool = False) -> list[str]:
    """The keys (sorted) that break the grammar; ``patterns`` allows the ``*`` wildcard."""
    ok = is_legal_pattern if patterns else is_legal_key
    return sorted(k for k in keys if not ok(k))


#: Last segments whose values are fractions in [0, 1] whatever the check: accuracies, error and success
#: rates, calibration error, confidence, coverage, AUROC; with ``fpr_at_<p>tpr`` and ``certified_accuracy_at_r_<g>``.
FRACTION_LEAVES = frozenset({"accuracy", "robust_accuracy", "clean_accuracy", "error", "attack_success_rate", "robust_accuracy_given_clean_correct",
                             "worst_class_accuracy", "mean_confidence", "ece", "auroc", "coverage"})


def is_fraction(k: str) -> bool:
    """Whether metric key ``k`` names a fraction (its value must lie in [0, 1]; see :data:`FRACTION_LEAVES`)."""
    leaf = k.rsplit("/", 1)[-1]
    return leaf in FRACTION_LEAVES or (leaf.startswith("fpr_at_") and leaf.endswith("tpr")) or leaf.startswith("certified_accuracy_at_r_")


# -- value segments -------------------------------------------------------------------------------
def number(value: float) -> str:
    """A value as a key segment writes it: ``format(value, ".4g")`` without the exponent's ``+``,
    which MLflow refuses (``0.03137``, ``16``, ``1e-05``, ``1.235e04``, ``1e30``); ``float()`` reads it back."""
    return f"{float(value):.4g}".replace("e+", "e")


def key_clash(values: "Iterable[float]") -> tuple[float, float] | None:
    """The first two different values that :func:`number` writes alike (so their metric keys would
    merge, e.g. 0.1 and 0.10004), or ``None``. Suites and commands refuse such lists up front."""
    seen: dict[str, float] = {}
    for v in values:
        text = number(v)
        if text in seen and float(seen[text]) != float(v):
            return seen[text], v
        seen.setdefault(text, v)
    return None


def eps_segment(eps: float) -> str:
    """``eps_<eps as number() writes it>``; the same budget always gives the same segment."""
    return f"eps_{number(eps)}"


EPS_ANY = "eps_*"  # used in definitions (``.../eps_*/robust_accuracy``), never in a metric key
CLASS_ANY = "class_*"
NAME_ANY = "*"  # any name (a corruption, an OOD set) in a definition
SEVERITY_ANY = "s*"


def class_segment(index: int) -> str:
    return f"class_{int(index)}"


def severity_segment(severity: int) -> str:
    return f"s{int(severity)}"


def after_segment(attack: str) -> str:
    return f"after_{attack}"


def per_eps(name: str, eps: float) -> str:
    """A per-sample (or per-item) name at one budget: ``robust/eps_0.1``, ``fooled_by/eps_0.1``."""
    return key(name, eps_segment(eps))


def fpr_at_tpr(tpr_percent: int | float) -> str:
    return f"fpr_at_{float(tpr_percent):g}tpr"


def sigma_segment(sigma: float) -> str:
    """``sigma_<sigma as number() writes it>`` (randomized smoothing's noise level)."""
    return f"sigma_{number(sigma)}"


def at_radius(metric: str, radius: float) -> str:
    """``<metric>_at_r_<radius as number() writes it>``: a certify metric at one L2 radius."""
    return f"{metric}_at_r_{number(radius)}"


# -- parsing --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParsedKey:
    """The parts of a key: its segments, and the values its value segments carry (None when absent)."""

    segments: tuple[str, ...]
    eps: float | None = None
    class_index: int | None = None
    severity: int | None = None
    after: str | None = None
    sigma: float | None = None
    radius: float | None = None

    @property
    def head(self) -> str:
        """The first segment: the check family (``clean``, ``adversarial``, ``corruption``, ...)."""
        return self.segments[0] if self.segments else ""

    @property
    def metric(self) -> str:
        """The last segment: the metric's name (``accuracy``, ``robust_accuracy``, ...)."""
        return self.segments[-1] if self.segments else ""

    @property
    def measure(self) -> str:
        """The metric's name without its radius (``certified_accuracy_at_r_0.5`` -> ``certified_accuracy``)."""
        m = _AT_RADIUS.match(self.metric)
        return m.group(1) if m else self.metric

    @property
    def parent(self) -> str:
        """The key without its last segment (``ood/energy/svhn/auroc`` -> ``ood/energy/svhn``)."""
        return "/".join(self.segments[:-1])

    def label(self, class_names: Sequence[str] | None = None) -> str:
        """The key for people: a ``class_<i>`` segment also names the class (``class_3 [cat]``)."""
        names: Sequence[str] = class_names or ()  # not copied: a report calls this once per key (40,000 classes made it quadratic)
        out = []
        for s in self.segments:
            m = _CLASS.match(s)
            out.append(f"{s} [{names[int(m.group(1))]}]" if m and m.group(1).isdigit() and int(m.group(1)) < len(names) else s)
        return "/".join(out)

    def without_values(self) -> str:
        """The key with eps/class segments replaced by their wildcards (groups keys by kind)."""
        out = []
        for s in self.segments:
            out.append(EPS_ANY if _EPS.match(s) else CLASS_ANY if _CLASS.match(s) else s)
        return "/".join(out)


def parse(k: str) -> ParsedKey:
    """Split a key into its parts; eps, class, severity, ensemble-member, sigma and radius segments
    are decoded. A schema-1.x key is read as :func:`upgrade_v1_key` (without class names) maps it,
    so consumers accept both forms (``class=<name>`` then has no index unless the name is one)."""
    segs = tuple(upgrade_v1_key(k).split("/")) if ("=" in k or "@" in k) else tuple(k.split("/"))
    eps: float | None = None
    cls: int | None = None
    sev: int | None = None
    after: str | None = None
    sigma: float | None = None
    radius: float | None = None
    for s in segs:
        if (m := _EPS.match(s)) and m.group(1) != "*":
            try:
                eps = float(m.group(1))
            except ValueError:
                pass
        elif (m := _CLASS.match(s)) and m.group(1) != "*":
            cls = int(m.group(1))
        elif m := _SEVERITY.match(s):
            sev = int(m.group(1))
        elif m := _AFTER.match(s):
            after = m.group(1)
        elif m := _SIGMA.match(s):
            sigma = _float(m.group(1))
        elif m := _AT_RADIUS.match(s):
            radius = _float(m.group(2))
    return ParsedKey(segs, eps, cls, sev, after, sigma, radius)


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def matches(k: str, *patterns: str) -> bool:
    """True when key ``k`` (either schema) has as many segments as one of ``patterns`` and each
    segment matches (shell-style ``*`` within a segment: ``ood/*/near/auroc``, ``certify/sigma_*/abstention_rate``)."""
    segs = parse(k).segments
    for pat in patterns:
        ps = pat.split("/")
        if len(ps) == len(segs) and all(fnmatchcase(s, q) for s, q in zip(segs, ps)):
            return True
    return False


def eps_of(k: str) -> float | None:
    """The budget a key refers to, or None."""
    return parse(k).eps


# -- schema 1.x -----------------------------------------------------------------------------------
_V1_CLASS = re.compile(r"^class=(.*)$")
_V1_AT_EPS = re.compile(r"^([^@]+)@eps=(.*)$")
_V1_PLACEHOLDER = re.compile(r"<[^<>/]*>")
_V1_ILLEGAL = re.compile(r"[^A-Za-z0-9_.\- *]")


def upgrade_v1_key(k: str, class_names: Sequence[str] | None = None) -> str:
    """Map a schema-1.x key (or definition pattern) to this grammar.

    Per segment: a per-sample ``NAME@eps=X`` -> ``NAME/eps_X`` (``robust@eps=0.1`` -> ``robust/eps_0.1``);
    ``class=NAME`` -> ``class_<index of NAME in class_names>`` (a name that is not in
    the list, or no list, keeps ``class_<NAME made legal>``); otherwise ``@`` -> ``_at_``, ``=`` ->
    ``_`` (``eps=X`` -> ``eps_X``, ``after=A`` -> ``after_A``, ``sigma=X`` -> ``sigma_X``,
    ``certified_accuracy@r=X`` -> ``certified_accuracy_at_r_X``, ``fpr@95tpr`` -> ``fpr_at_95tpr``),
    a ``<placeholder>`` -> ``*`` (``corruption/<name>/s<k>/accuracy`` -> ``corruption/*/s*/accuracy``)
    and any other character MLflow refuses -> ``_``. Keys already in this grammar come back unchanged.
    """
    names = list(class_names) if class_names is not None else []
    out = []
    for s in k.split("/"):
        if m := _V1_AT_EPS.match(s):
            s = _V1_ILLEGAL.sub("_", m.group(1)) + "/eps_" + _V1_ILLEGAL.sub("_", _V1_PLACEHOLDER.sub("*", m.group(2)))
        elif m := _V1_CLASS.match(s):
            name = m.group(1)
            s = class_segment(names.index(name)) if name in names else (CLASS_ANY if name == "*" else "class_" + legal_segment(name))
        else:
            s = _V1_PLACEHOLDER.sub("*", s.replace("@", "_at_").replace("=", "_"))
            s = _V1_ILLEGAL.sub("_", s)
        out.append(s)
    return "/".join(out)


_KEYED_FIELDS = ("metrics", "intervals", "counts", "definitions", "per_sample", "series")


def upgrade_v1_check(check: dict[str, Any], class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """A copy of one check of a scorecard dict with every key of its metrics, intervals, counts,
    definitions, per-sample arrays and series (and key-like audit names) mapped by
    :func:`upgrade_v1_key`; the input is not modified (a signature is verified over it as signed).
    The identity on a check already in this grammar."""
    out = dict(check)
    for f in _KEYED_FIELDS:
        v = check.get(f)
        if isinstance(v, dict):
            out[f] = {(upgrade_v1_key(k, class_names) if isinstance(k, str) else k): x for k, x in v.items()}
            if len(out[f]) != len(v):
                raise MetricKeyError(f"two {f} keys of check {check.get('id')!r} name the same key once upgraded to schema {KEY_SCHEMA}")
    audit = check.get("audit")
    if isinstance(audit, list):
        out["audit"] = [
            {**a, "name": upgrade_v1_key(a["name"], class_names)} if isinstance(a, dict) and isinstance(a.get("name"), str) and ("=" in a["name"] or "@" in a["name"]) else a
            for a in audit
        ]
    return out
