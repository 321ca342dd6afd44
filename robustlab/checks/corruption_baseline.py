"""The mCE baseline taken from another model's robustlab scorecard (the checks layer: it reads a
scorecard, which the corruption algorithms in ``robustlab.corruptions`` never do)."""

from __future__ import annotations

import math
from pathlib import Path

from ..corruptions.metrics import Baseline
from ..errors import RobustlabError
from ..metric_keys import parse, severity_segment
from ..scorecard import Scorecard

__all__ = ["baseline_from_scorecard"]


def baseline_from_scorecard(path: str | Path) -> Baseline:
    """Per-(corruption, severity) errors from an earlier robustlab scorecard with a corruption check."""
    card = Scorecard.read(path)
    chk = next((c for c in card.checks if c.check == "corruption"), None)
    if chk is None:
        raise RobustlabError(f"baseline scorecard {path} has no corruption check; run `robustlab evaluate` on the baseline model with a suite that contains `check: corruption`.")
    pre = ("corruption",) if chk.id == "corruption" else ("corruption", chk.id)
    prefix = "/".join(pre) + "/"
    errors: dict[str, dict[int, float]] = {}
    for key, value in chk.metrics.items():
        pk = parse(key)  # <prefix>/<corruption>/s<k>/accuracy
        if pk.segments[: len(pre)] == pre and len(pk.segments) == len(pre) + 3 and pk.severity is not None \
                and pk.segments[len(pre) + 1] == severity_segment(pk.severity) and pk.metric == "accuracy":
            if value is not None and math.isfinite(value):
                errors.setdefault(pk.segments[len(pre)], {})[pk.severity] = 1.0 - float(value)
    if not errors:
        raise RobustlabError(f"baseline scorecard {path} has no per-severity corruption accuracies (corruption/<name>/s<k>/accuracy); re-run the baseline with a current robustlab.")
    clean = chk.metrics.get(f"{prefix}clean/accuracy", card.metrics().get("clean/accuracy"))
    return Baseline(
        name=str(card.model.get("spec", path)),
        errors=errors,
        clean_error=(1.0 - float(clean)) if clean is not None and math.isfinite(clean) else None,
        num_classes=card.model.get("num_classes"),
        source=str(path),
    )
