"""Protocols of two scorecards: numbers made under different protocols (ImageNet-C vs CIFAR-10-C
constants, ...) are not comparable, so ``robustlab compare`` refuses them unless asked.

A *gate protocol* reads, from one scorecard, the protocol of each check it knows about
(``{check id: protocol}``); two scorecards whose protocols differ for a check present in both are not
comparable. Built-ins live in this module; third parties add one through the entry-point group
``robustlab.gate_protocols`` (a function ``Scorecard -> dict[str, str]``), e.g. for their own check.
"""

from __future__ import annotations

from typing import Callable

from ..registry import Registry
from ..scorecard import Scorecard

ProtocolReader = Callable[[Scorecard], "dict[str, str]"]

#: Gate protocols by name (the name is the kind of protocol: ``corruption``, ...).
GATE_PROTOCOLS: "Registry[ProtocolReader]" = Registry("gate protocol", group="robustlab.gate_protocols", package="robustlab.gates")

LEGACY = "imagenet-c (not recorded: scorecard made before corruption protocols)"


@GATE_PROTOCOLS.register("corruption")
def corruption_protocols(card: Scorecard) -> dict[str, str]:
    """``{check id: protocol}`` for the corruption checks of ``card`` (legacy cards: :data:`LEGACY`)."""
    out: dict[str, str] = {}
    for c in card.checks:
        if c.check == "corruption":
            out[c.id] = str(c.params.get("protocol_resolved") or LEGACY)
    return out


#: Run settings that change the numbers: scorecards that differ in them are not comparable.
RUN_SETTINGS: tuple[tuple[str, object], ...] = (("precision", "fp32"), ("compile", False), ("channels_last", False))


def setting_mismatches(a: Scorecard, b: Scorecard) -> dict[str, tuple[str, str]]:
    """Settings that produced the numbers and differ between A and B: ``run.precision``,
    ``run.compile``, ``run.channels_last`` (missing = the default) and the ``protocol`` parameter
    of every check present in both (e.g. the corruption protocol). Label -> (A's value, B's value)."""
    out: dict[str, tuple[str, str]] = {}
    for key, default in RUN_SETTINGS:
        va, vb = a.run.get(key, default), b.run.get(key, default)
        if va != vb:
            out[f"run.{key}"] = (str(va), str(vb))
    for ca in a.checks:
        cb = b.check(ca.id)
        if cb is None:
            continue
        pa, pb = (ca.params or {}).get("protocol"), (cb.params or {}).get("protocol")
        if (pa is not None or pb is not None) and pa != pb:
            out[f"{ca.id}.protocol"] = (str(pa), str(pb))
    return out


def mismatch_warning(mismatches: dict[str, tuple[str, str]]) -> str:
    """One line naming every differing setting (empty when there is none)."""
    if not mismatches:
        return ""
    what = "; ".join(f"{k}: {x} vs {y}" for k, (x, y) in mismatches.items())
    return f"the two scorecards were made with different settings ({what}); their numbers are not directly comparable."


def protocol_mismatches(a: Scorecard, b: Scorecard) -> list[str]:
    """One line per (gate protocol, check present in both) whose protocols differ; lines of the
    ``corruption`` protocol read ``<check id>: <a> vs <b>``, others ``<protocol> <check id>: ...``."""
    out: list[str] = []
    for name, read in GATE_PROTOCOLS.items():
        pa, pb = read(a), read(b)
        head = "" if name == "corruption" else f"{name} "
        out += [f"{head}{cid}: {pa[cid]} vs {pb[cid]}" for cid in sorted(set(pa) & set(pb)) if pa[cid] != pb[cid]]
    return out


#: Check parameters that only change what a scorecard shows or how fast it is made, never a metric's value:
#: a baseline that differs from the candidate in them is still comparable.
PRESENTATION_PARAMS = frozenset({"per_sample", "audit", "audit_samples", "cache", "protocol_source"})

#: Fields of ``data`` that identify the evaluated images when ``content_sha256`` is not recorded by both.
DATA_IDENTITY = ("ids_sha256", "n", "split", "limit")


def param_mismatches(card: Scorecard, baseline: Scorecard, check_id: str | None) -> list[str]:
    """The parameters of check ``check_id`` that differ between ``card`` and ``baseline`` (budgets, steps,
    corruptions, ...: another measurement), and its primary budget when recorded; presentation-only
    parameters (:data:`PRESENTATION_PARAMS`) and ``protocol`` (see :func:`setting_mismatches`) aside."""
    ca = card.check(check_id) if check_id is not None else None
    cb = baseline.check(check_id) if check_id is not None else None
    if ca is None or cb is None:
        return []
    skip = PRESENTATION_PARAMS | {"protocol"}
    pa, pb = ca.params or {}, cb.params or {}
    out = [f"{check_id}.{k}: baseline {pb.get(k)!r} vs {pa.get(k)!r}" for k in sorted((set(pa) | set(pb)) - skip) if pa.get(k) != pb.get(k)]
    eps_a = [v for k, v in ca.metrics.items() if k.endswith("/primary_eps")]
    eps_b = [v for k, v in cb.metrics.items() if k.endswith("/primary_eps")]
    if eps_a != eps_b:
        out.append(f"{check_id} primary budget: baseline {eps_b} vs {eps_a}")
    return out


def data_mismatches(card: Scorecard, baseline: Scorecard) -> list[str]:
    """Why the images behind ``card`` cannot be confirmed to be the baseline's (empty when they are the same):
    ``data.content_sha256`` when both record it; otherwise every identity field both record
    (:data:`DATA_IDENTITY`, and the ``data.ids`` lists) must agree, and the ids must be recorded by both
    (``data.ids_sha256`` or ``data.ids``), else nothing confirms that the same images were evaluated."""
    da, db = card.data, baseline.data
    ha, hb = da.get("content_sha256"), db.get("content_sha256")
    if isinstance(ha, str) and isinstance(hb, str) and ha and hb:
        if ha == hb:
            return []
        return [f"other images: baseline {db.get('spec')}, {db.get('n')} images, data.content_sha256 {hb[:12]}; "
                f"this run {da.get('spec')}, {da.get('n')} images, {ha[:12]}"]
    differ = [f"data.{k}: baseline {db.get(k)!r} vs {da.get(k)!r}" for k in DATA_IDENTITY if k in da and k in db and da.get(k) != db.get(k)]
    if isinstance(da.get("ids"), list) and isinstance(db.get("ids"), list) and da["ids"] != db["ids"]:
        differ.append(f"data.ids: {len(db['ids'])} in the baseline vs {len(da['ids'])}, not the same list")
    if differ:
        return ["other images (" + "; ".join(differ) + ")"]
    if not any(isinstance(da.get(k), (str, list)) and isinstance(db.get(k), type(da.get(k))) for k in ("ids_sha256", "ids")):
        return ["the images cannot be confirmed to be the same: a scorecard records neither data.content_sha256 nor the sample ids "
                "(data.ids_sha256, data.ids)"]
    return []


def baseline_mismatches(card: Scorecard, baseline: Scorecard, check_id: str | None) -> list[str]:
    """Why ``card``'s numbers of check ``check_id`` cannot be held against ``baseline``'s (empty when they can):
    the run settings that change the numbers, that check's protocols and parameters (:func:`param_mismatches`),
    and the evaluated images (:func:`data_mismatches`)."""
    settings = {k: v for k, v in setting_mismatches(card, baseline).items() if k.startswith("run.") or k == f"{check_id}.protocol"}
    out = [f"{k}: baseline {y} vs {x}" for k, (x, y) in settings.items()]
    if f"{check_id}.protocol" not in settings:
        out += [f"protocol {line}" for line in protocol_mismatches(baseline, card) if check_id is not None and line.split(":", 1)[0].split()[-1] == check_id]
    out += param_mismatches(card, baseline, check_id)
    out += data_mismatches(card, baseline)
    return out
