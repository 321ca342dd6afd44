"""Corruption metrics (Hendrycks & Dietterich 2019) and their baselines; no torch import.

Definitions (``/work/shared/REFERENCES.md``), all as fractions (multiply by 100 for the percentages
usually published):

* E(f, s, c): top-1 error of model f on corruption c at severity s.
* CE(f, c) = sum_s E(f, s, c) / sum_s E(base, s, c).
* mCE = mean of CE over the 15 benchmark corruptions.
* relative CE(f, c) = sum_s (E(f, s, c) - E_clean(f)) / sum_s (E(base, s, c) - E_clean(base));
  relative mCE is its mean over the 15.
* unnormalised mean corruption error = mean over corruptions and severities of E(f, s, c) (used when
  no baseline exists; it is 1 - mean corruption accuracy).

The baseline is either AlexNet's published ImageNet-C errors (kept as data in
``assets/alexnet_errors.json``; only per-corruption means over the five severities are published,
so AlexNet-normalised CE needs all five severities) or another model's robustlab scorecard.

References: Hendrycks & Dietterich, ICLR 2019 (Sec. 3, CE / mCE / relative mCE; their Table of
AlexNet errors as listed in REFERENCES.md).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from ..errors import RobustlabError

_ASSETS = Path(__file__).resolve().parent / "assets"


@dataclass(frozen=True)
class Baseline:
    """Errors of a baseline model.

    Attributes:
        name: what the baseline is (``alexnet`` or the scorecard's model spec).
        errors: per corruption, per severity top-1 error (empty when only means are known).
        mean_errors: per corruption, the mean error over severities 1..5 (AlexNet's published form).
        clean_error: the baseline's clean top-1 error, if known (needed for relative CE).
        num_classes: number of classes of the baseline's data, if known.
    """

    name: str
    errors: dict[str, dict[int, float]] = field(default_factory=dict)
    mean_errors: dict[str, float] = field(default_factory=dict)
    clean_error: float | None = None
    num_classes: int | None = None
    source: str = ""


def alexnet_baseline() -> Baseline:
    """AlexNet's ImageNet-C errors (Hendrycks & Dietterich 2019), the ImageNet mCE baseline."""
    d = json.loads((_ASSETS / "alexnet_errors.json").read_text())
    return Baseline(
        name="alexnet",
        mean_errors={k: float(v) for k, v in d["corruption_error"].items()},
        clean_error=float(d["clean_error"]),
        num_classes=int(d["num_classes"]),
        source=str(d["source"]),
    )


def corruption_error(errors: Mapping[int, float], baseline: Baseline, name: str) -> float | None:
    """CE(f, c) = sum_s E(f, s, c) / sum_s E(base, s, c) over the severities both have.

    Returns None when the baseline lacks the corruption (or, for mean-only baselines such as
    AlexNet, when f was not evaluated at all five severities).
    """
    num_den = _sums(errors, baseline, name, clean_f=0.0, clean_b=0.0)
    if num_den is None or num_den[1] <= 0:
        return None
    return num_den[0] / num_den[1]


def relative_corruption_error(errors: Mapping[int, float], clean_error: float, baseline: Baseline, name: str) -> float | None:
    """Relative CE(f, c) = sum_s (E(f,s,c) - E_clean(f)) / sum_s (E(base,s,c) - E_clean(base))."""
    if baseline.clean_error is None:
        return None
    num_den = _sums(errors, baseline, name, clean_f=clean_error, clean_b=baseline.clean_error)
    if num_den is None or num_den[1] <= 0:
        return None
    return num_den[0] / num_den[1]


def _sums(errors: Mapping[int, float], baseline: Baseline, name: str, *, clean_f: float, clean_b: float) -> tuple[float, float] | None:
    if name in baseline.errors:
        common = sorted(set(errors) & set(baseline.errors[name]))
        if not common:
            return None
        return (sum(errors[s] - clean_f for s in common), sum(baseline.errors[name][s] - clean_b for s in common))
    if name in baseline.mean_errors:
        if sorted(errors) != [1, 2, 3, 4, 5]:
            return None
        return (sum(errors[s] - clean_f for s in errors), 5 * (baseline.mean_errors[name] - clean_b))
    return None
