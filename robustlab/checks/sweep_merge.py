"""Worst case over an epsilon sweep: every per-epsilon figure follows the merged robust flags.

A valid adversarial example found at a smaller epsilon lies in every larger ball, so a point broken
at eps_i counts as broken at every eps_j >= eps_i. The merge applies this to everything a sweep
reports per epsilon, not only to the final flags:

- ``robust``: AND over eps_i <= eps_j;
- ``norm``: the perturbation norm of the example that breaks the point at eps_j (its own, or the
  one found at the largest smaller epsilon that broke it), so norms are never missing (inf) for a
  broken point;
- ``after`` (AutoAttack, attack name -> flags after that attack): AND over eps_i <= eps_j per attack,
  so ``after=<last attack>`` equals the final flags and the black-box audit sees merged flags;
- ``fooled_by``: the first attack whose merged ``after`` flag is false ("clean" for clean errors).
"""

from __future__ import annotations

from typing import Any, Sequence


def merge_over_eps(outcomes: dict[float, dict[str, Any]], eps_list: Sequence[float]) -> None:
    """Merge per-epsilon outcomes in place (``eps_list`` increasing). Each outcome holds per-sample
    lists ``correct``, ``robust``, ``norm`` (None for unbroken points) and optionally ``after`` and
    ``fooled_by``."""
    if not eps_list:
        return
    n = len(outcomes[eps_list[0]]["robust"])
    robust = [True] * n
    last_norm: list[float | None] = [None] * n
    after: dict[str, list[bool]] | None = None
    for eps in eps_list:
        o = outcomes[eps]
        correct = [bool(c) for c in o["correct"]]
        robust = [a and bool(b) for a, b in zip(robust, o["robust"])]
        norms: list[float | None] = []
        for i in range(n):
            v = o["norm"][i]
            if v is not None and not robust[i]:
                last_norm[i] = float(v)
            norms.append(None if robust[i] or not correct[i] else last_norm[i])
        o["robust"] = robust
        o["norm"] = norms
        if "after" in o:
            cur = {a: [bool(f) for f in flags] for a, flags in o["after"].items()}
            if after is None:
                after = cur
            else:
                after = {a: [p and q for p, q in zip(after[a], cur[a])] for a in cur if a in after}
            o["after"] = after
            last = list(after)[-1] if after else None
            if last is not None:
                # the final flags are the flags after the last attack (also after the merge)
                robust = [r and f for r, f in zip(robust, after[last])]
                o["robust"] = robust
            o["fooled_by"] = [
                "clean" if not correct[i] else next((a for a, flags in after.items() if not flags[i]), "")
                for i in range(n)
            ]
