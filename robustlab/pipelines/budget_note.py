"""Tell the user which attack budgets and corruption protocol a run uses, and where they came from.

Budgets (attack epsilons) and the corruption protocol depend on the data set, which is named by
``--dataset``, the data (npz ``dataset`` entry, folder ``manifest.json``) or the model's default, or
else inferred from the input shape (:func:`robustlab.attacks.scoring.dataset_family`). Issue 14
asks that this is never silent: :func:`budget_summary` builds the one progress line that
``robustlab evaluate`` prints on stderr before the checks run, e.g.::

    budget: pgd_linf: Linf eps 0.0078, 0.0157, 0.0314 (primary), 0.0627 = 8/255 x (0.25, 0.5, 1, 2),
    the standard cifar10 budget (data set cifar10, named by --dataset); corruption: protocol auto -> cifar-c

The epsilons are resolved exactly as the checks resolve them (:func:`resolve_epsilons` with the
check's own default sweep), in the model's input scale.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..attacks.scoring import budget_scale_problem, dataset_family, resolve_epsilons
from ..attacks.threat import BUDGETS, Norm
from ..data.naming import auto_protocol
from ..errors import RobustlabError


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def _attack_note(model: Any, check_id: str, check_cls: Any, params: Any, named: str) -> str:
    norm = Norm.parse(getattr(params, "norm", Norm.LINF))
    given = getattr(params, "epsilons", None)
    sweep = tuple(getattr(check_cls, "default_sweep", (1.0,)))
    try:
        eps, primary = resolve_epsilons(model, norm, given, getattr(params, "primary_eps", None), sweep=sweep)
    except RobustlabError:
        return f"{check_id}: {norm.value} no standard budget is known for this data set ({named}); set epsilons: in the suite"
    listed = ", ".join(_fmt(e) + (" (primary)" if e == primary and len(eps) > 1 else "") for e in eps)
    if given:
        problem = budget_scale_problem(model, norm, primary)
        return f"{check_id}: {norm.value} eps {listed}, set in the suite (epsilons:)" + (f" WARNING: {problem}" if problem else "")
    fam = dataset_family(model) or ""
    budget = BUDGETS.get(fam, {}).get(norm)
    kind = "the standard" if budget is not None and budget.standard else "robustlab's default (not a field standard)"
    label = budget.label if budget is not None else _fmt(primary)
    scale = label if sweep == (1.0,) else f"{label} x ({', '.join(_fmt(f) for f in sweep)})"
    return f"{check_id}: {norm.value} eps {listed} = {scale}, {kind} {fam} budget ({named})"


def budget_summary(model: Any, entries: Sequence[Any], checks: Any, dataset: str | None, source: str) -> str | None:
    """One line naming the budget of every attack check and the protocol of every corruption check of
    ``entries`` (suite entries with ``id``, ``check``, ``params``); None when the suite has neither.

    Args:
        model: the loaded model (its ``info.dataset``, input shape and bounds decide the budgets).
        checks: the check registry (``checks.get(name)`` -> class), for each check's default sweep.
        dataset, source: the resolved data-set name (or None) and where it came from.
    """
    shape = "x".join(str(s) for s in (getattr(model, "input_shape", None) or ()))
    named = f"data set {dataset}, named by {source}" if dataset else f"data set not named: inferred from the input shape {shape}; name it with --dataset"
    parts: list[str] = []
    for entry in entries:
        params = entry.params
        if hasattr(params, "epsilons") and hasattr(params, "norm"):
            parts.append(_attack_note(model, entry.id, checks.get(entry.check), params, named))
        elif hasattr(params, "protocol") and entry.check == "corruption":
            proto = str(getattr(params, "protocol"))
            resolved = auto_protocol(dataset) if proto == "auto" else None
            how = f" -> {resolved} (data set {dataset})" if resolved else (" (resolved from the image size)" if proto == "auto" else "")
            parts.append(f"{entry.id}: protocol {proto}{how}")
    return "budget: " + "; ".join(parts) if parts else None
