"""The metric-key grammar: one torch-free module builds and parses every scorecard metric key.

A key is a slash path of segments made only of the characters MLflow accepts as they are
(letters, digits, ``_ - .`` and space), so the same string is used in the scorecard, in MLflow and
in gate policies, with no remapping and no hashing. Segments that carry a value are written
``name_value``:

=============================  =====================================================================
segment                        meaning
=============================  =====================================================================
``eps_<g>``                    an attack budget, ``format(eps, ".4g")`` (``eps_0.03137``, ``eps_1e-05``)
``class_<i>``                  class index ``i`` (names live in the scorecard's ``model.class_names``)
``s<k>``                       corruption severity ``k`` (1-5)
``after_<attack>``             cumulative robust accuracy after an ensemble member (AutoAttack)
``fpr_at_<p>tpr``              false-positive rate at ``p``% true-positive rate (OOD)
=============================  =====================================================================

Examples: ``adversarial/pgd_linf/eps_0.03137/robust_accuracy``,
``adversarial/autoattack_linf/eps_0.03137/after_apgd-ce/robust_accuracy``,
``clean/class_3/accuracy``, ``corruption/gaussian_noise/s3/accuracy``, ``ood/energy/svhn/fpr_at_95tpr``.

Scorecards of schema 1.x wrote ``eps=<g>``, ``class=<name>``, ``after=<attack>`` and ``fpr@95tpr``;
:func:`upgrade_v1_key` maps such a key to this grammar (``Scorecard.read`` and gate policies use it),
so old scorecards and policies keep working.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

#: The scorecard schema that introduced this grammar.
KEY_SCHEMA = "2.0"

#: MLflow's limit on a metric key's length.
MAX_KEY_LENGTH = 250

_SEGMENT = re.compile(r"^[A-Za-z0-9_.\- ]+$")
_EPS = re.compile(r"^eps_([0-9.eE+\-]+|\*)$")
_CLASS = re.compile(r"^class_(\d+|\*)$")
_SEVERITY = re.compile(r"^s(\d+)$")
_AFTER = re.compile(r"^after_(.+)$")


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


def is_legal_key(k: str) -> bool:
    return 0 < len(k) <= MAX_KEY_LENGTH and all(is_legal_segment(s) for s in k.split("/"))


# -- value segments -------------------------------------------------------------------------------
def eps_segment(eps: float) -> str:
    """``eps_<eps formatted with .4g>``; the same budget always gives the same segment."""
    return f"eps_{float(eps):.4g}"


EPS_ANY = "eps_*"  # used in definitions (``.../eps_*/robust_accuracy``), never in a metric key
CLASS_ANY = "class_*"


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


# -- parsing --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ParsedKey:
    """The parts of a key: its segments, and the values its value segments carry (None when absent)."""

    segments: tuple[str, ...]
    eps: float | None = None
    class_index: int | None = None
    severity: int | None = None
    after: str | None = None

    @property
    def head(self) -> str:
        """The first segment: the check family (``clean``, ``adversarial``, ``corruption``, ...)."""
        return self.segments[0] if self.segments else ""

    @property
    def metric(self) -> str:
        """The last segment: the metric's name (``accuracy``, ``robust_accuracy``, ...)."""
        return self.segments[-1] if self.segments else ""

    def without_values(self) -> str:
        """The key with eps/class segments replaced by their wildcards (groups keys by kind)."""
        out = []
        for s in self.segments:
            out.append(EPS_ANY if _EPS.match(s) else CLASS_ANY if _CLASS.match(s) else s)
        return "/".join(out)


def parse(k: str) -> ParsedKey:
    """Split a key into its parts; eps, class, severity and ensemble-member segments are decoded."""
    segs = tuple(k.split("/"))
    eps: float | None = None
    cls: int | None = None
    sev: int | None = None
    after: str | None = None
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
    return ParsedKey(segs, eps, cls, sev, after)


def eps_of(k: str) -> float | None:
    """The budget a key refers to, or None."""
    return parse(k).eps


# -- schema 1.x -----------------------------------------------------------------------------------
_V1_EPS = re.compile(r"^eps=(.*)$")
_V1_CLASS = re.compile(r"^class=(.*)$")
_V1_AFTER = re.compile(r"^after=(.*)$")
_V1_AT_EPS = re.compile(r"^(.+)@eps=(.*)$")


def upgrade_v1_key(k: str, class_names: Sequence[str] | None = None) -> str:
    """Map a schema-1.x key to this grammar.

    ``eps=X`` -> ``eps_X``, ``after=A`` -> ``after_A``, a per-sample ``NAME@eps=X`` -> ``NAME/eps_X``
    (``robust@eps=0.1`` -> ``robust/eps_0.1``), ``@`` -> ``_at_``, and ``class=NAME`` ->
    ``class_<index of NAME in class_names>`` (a name that is not in the list, or no list, keeps
    ``class_<NAME made legal>``). Keys already in this grammar come back unchanged.
    """
    names = list(class_names) if class_names is not None else []
    out = []
    for s in k.split("/"):
        if m := _V1_AT_EPS.match(s):
            s = m.group(1).replace("@", "_at_") + "/eps_" + m.group(2)
        elif m := _V1_EPS.match(s):
            s = "eps_" + m.group(1)
        elif m := _V1_AFTER.match(s):
            s = "after_" + m.group(1)
        elif m := _V1_CLASS.match(s):
            name = m.group(1)
            s = class_segment(names.index(name)) if name in names else ("class_*" if name == "*" else "class_" + legal_segment(name))
        s = s.replace("@", "_at_")
        out.append(s)
    return "/".join(out)
