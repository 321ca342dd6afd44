"""Plain-language list of what a scorecard did *not* test (threat models, attacks, corruptions ...).

Derived only from the scorecard: the families that ran, the norms, epsilons, attacks, corruptions and
OOD sets named in its metric keys and check parameters, compared with the field's standard protocols
(see ``/work/shared/REFERENCES.md``).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from ..attacks.threat import BUDGETS, dataset_key, standard_budgets
from ..corruptions.names import BENCHMARK as BENCHMARK_CORRUPTIONS
from ..corruptions.names import HELD_OUT as HELD_OUT_CORRUPTIONS
from ..metric_keys import eps_of, parse
from ..scorecard import Scorecard, Status
AUTOATTACK_STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")

#: the field's standard budgets by data-set key: norm -> (epsilon, label); the one table is
#: robustlab.attacks.threat.BUDGETS (torch-free), robustlab's own default choices left out.
STANDARD_BUDGETS: dict[str, dict[str, tuple[float, str]]] = {
    ds: {n.value: (b.eps, b.label) for n, b in standard_budgets(ds).items()} for ds in BUDGETS if standard_budgets(ds)
}


def family_of(check: Any) -> str:
    """The family of a check result: the first segment of its metric keys, else a guess from its name."""
    heads = [parse(k).head for k in check.metrics]
    if heads:
        return max(set(heads), key=heads.count)
    name = str(check.check).lower()
    for fam, words in (
        ("adversarial", ("attack", "pgd", "apgd", "fgsm", "square", "fab", "cw", "adversarial")),
        ("corruption", ("corrupt",)),
        ("ood", ("ood", "detector")),
        ("certify", ("certif", "smooth")),
        ("clean", ("clean", "accuracy", "calibration")),
    ):
        if any(w in name for w in words):
            return fam
    return "other"


def _blob(check: Any) -> str:
    """Lower-case text of a check's name, id, parameters, metric keys and series labels."""
    parts = [str(check.check), str(check.id), json.dumps(check.params, default=str)]
    parts += list(check.metrics)
    for s in check.series.values():
        parts += [str(r) for r in (s.rows if isinstance(s.rows, list) else [])] + list(map(str, s.y))  # a hand-edited file may hold any rows
    return " ".join(parts).lower().replace("-", "_")


def _dataset_key(card: Scorecard) -> str | None:
    """The data set's budget key: the recorded name (``data.dataset``, from ``--dataset``, the npz or
    folder manifest, or the model) first, else a guess from the data spec."""
    named = card.data.get("dataset")
    if isinstance(named, str) and named:
        return dataset_key(named)
    spec = str(card.data.get("spec", "")).lower().replace("-", "").replace("_", "")
    for k in ("cifar100", "cifar10", "imagenet", "mnist"):
        if k in spec and not (k == "mnist" and "fashion" in spec):
            return k
    return None


def _span(card: Scorecard) -> float:
    """The width of the model's input range (budgets are in its units), 1 when not recorded."""
    b = card.model.get("bounds")
    if isinstance(b, (list, tuple)) and len(b) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in b) and b[1] > b[0]:
        return float(b[1]) - float(b[0])
    return 1.0


def _norms(text: str) -> set[str]:
    found = set()
    if re.search(r"linf|l_inf|\binf\b", text):
        found.add("linf")
    if re.search(r"(?<![a-z0-9])l2(?![0-9])|_l2", text):
        found.add("l2")
    if re.search(r"(?<![a-z0-9])l1(?![0-9])|_l1", text):
        found.add("l1")
    return found


def not_tested(card: Scorecard) -> list[str]:
    """Sentences, each naming one thing the run did not test."""
    ok = [c for c in card.checks if c.status is Status.OK]
    fams: dict[str, list[Any]] = {}
    for c in ok:
        fams.setdefault(family_of(c), []).append(c)
    out: list[str] = []
    for c in card.checks:
        if c.status is not Status.OK:
            out.append(f"Check '{c.id}' ({c.check}) was {c.status.value}: {c.reason or 'no reason recorded'}. Its threat model is untested.")
    ds = _dataset_key(card)

    adv = fams.get("adversarial", [])
    if not adv:
        out.append("No adversarial attack was run: accuracy under worst-case input perturbations is unknown.")
    else:
        text = " ".join(_blob(c) for c in adv)
        norms = _norms(text)
        for norm, label in (("linf", "L-infinity"), ("l2", "L2")):
            if norm not in norms:
                out.append(f"No {label} attack was run.")
        if "l1" not in norms:
            out.append("No sparse (L0/L1) attack was run.")
        ran_aa = "autoattack" in text or all(a.replace("-", "_") in text for a in AUTOATTACK_STANDARD)
        if not ran_aa:
            missing = [a for a in AUTOATTACK_STANDARD if a.replace("-", "_") not in text]
            out.append(
                "The AutoAttack standard ensemble (APGD-CE, APGD-T, FAB-T, Square) was not run"
                + (f"; missing: {', '.join(missing)}" if missing else "")
                + ". Single attacks overestimate robustness."
            )
        if "square" not in text and "autoattack" not in text:
            out.append("No black-box (query-based) attack such as Square was run, so gradient masking cannot be ruled out from black-box evidence.")
        if ds in STANDARD_BUDGETS:
            for norm, (eps_std, label) in STANDARD_BUDGETS[ds].items():
                eps = [
                    e for c in adv if _norms(str(c.params.get("norm", "linf")).lower()) == {norm}
                    for k in c.metrics if (e := eps_of(k)) is not None and math.isfinite(e)
                ]
                if eps and max(eps) < eps_std * _span(card) * 0.99:
                    name = "L-infinity" if norm == "linf" else "L2"
                    out.append(f"The largest {name} epsilon tested ({max(eps):.4g}) is below the standard {ds} budget {label}.")
        out.append("No adaptive attack designed against this specific model or defense was run (Tramer et al. 2020); generic attacks can overestimate the robustness of defended models.")
    out.append("Spatial (rotation, translation), patch, physical-world and semantic perturbations were not tested.")

    cor = fams.get("corruption", [])
    if not cor:
        out.append("No common corruption (noise, blur, weather, digital) was tested.")
    else:
        text = " ".join(_blob(c) for c in cor)
        missing = [n for n in BENCHMARK_CORRUPTIONS if n not in text]
        if missing:
            out.append(f"Benchmark corruptions not tested ({len(missing)} of 15): {', '.join(missing)}; an mCE over fewer corruptions is not comparable to published mCE.")
        held = [n for n in HELD_OUT_CORRUPTIONS if n not in text]
        if held:
            out.append(f"Held-out corruptions not tested: {', '.join(held)}.")
    ood = fams.get("ood", [])
    if not ood:
        out.append("Out-of-distribution detection was not tested.")
    else:
        groups = {"near", "far", "tuning", "tuned", "fit", "shift", "id"}
        keys = [parse(k) for c in ood for k in c.metrics]
        sets = sorted({pk.segments[-2] for pk in keys if pk.metric == "auroc" and len(pk.segments) >= 4} - groups)
        out.append(
            "OOD detection was tested only against " + (", ".join(sets) if sets else "the configured OOD sets")
            + "; other shifts (near-OOD, new classes from the same source, adversarially perturbed OOD inputs) are untested."
        )
    if not fams.get("certify"):
        out.append("No certified (provable) robustness guarantee was computed.")
    else:
        out.append("Certificates are L2 randomized-smoothing certificates of the smoothed classifier, not of the base model; no L-infinity certificate was computed.")
    if not fams.get("clean"):
        out.append("Clean accuracy and calibration were not measured in this run.")

    n = card.data.get("n")
    if isinstance(n, int) and 0 < n < 1000:
        half = 1.96 * math.sqrt(0.25 / n)
        out.append(f"Only {n} samples were evaluated: a 95% interval of an accuracy near 50% is about ±{half:.2f} wide; small effects cannot be resolved.")
    out.append("Training-time threats (data poisoning, backdoors) and model extraction or privacy attacks are out of scope.")
    return out
