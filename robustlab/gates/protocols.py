"""Corruption protocols of two scorecards: numbers made under different protocols (ImageNet-C vs
CIFAR-10-C constants, ...) are not comparable, so ``robustlab compare`` refuses them unless asked."""

from __future__ import annotations

from ..scorecard import Scorecard

LEGACY = "imagenet-c (not recorded: scorecard made before corruption protocols)"


def corruption_protocols(card: Scorecard) -> dict[str, str]:
    """``{check id: protocol}`` for the corruption checks of ``card`` (legacy cards: :data:`LEGACY`)."""
    out: dict[str, str] = {}
    for c in card.checks:
        if c.check == "corruption":
            out[c.id] = str(c.params.get("protocol_resolved") or LEGACY)
    return out


def protocol_mismatches(a: Scorecard, b: Scorecard) -> list[str]:
    """One line per corruption check present in both whose protocols differ."""
    pa, pb = corruption_protocols(a), corruption_protocols(b)
    return [f"{cid}: {pa[cid]} vs {pb[cid]}" for cid in sorted(set(pa) & set(pb)) if pa[cid] != pb[cid]]
