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


def protocol_mismatches(a: Scorecard, b: Scorecard) -> list[str]:
    """One line per (gate protocol, check present in both) whose protocols differ; lines of the
    ``corruption`` protocol read ``<check id>: <a> vs <b>``, others ``<protocol> <check id>: ...``."""
    out: list[str] = []
    for name, read in GATE_PROTOCOLS.items():
        pa, pb = read(a), read(b)
        head = "" if name == "corruption" else f"{name} "
        out += [f"{head}{cid}: {pa[cid]} vs {pb[cid]}" for cid in sorted(set(pa) & set(pb)) if pa[cid] != pb[cid]]
    return out
