"""The adversarial condition of the ``uncertainty`` check: which adversarial inputs it measures on.

With ``--save-adversarial`` the inputs are the examples the suite's adversarial checks counted
(:mod:`robustlab.adversarial_examples`), per check and epsilon, read back shard by shard: condition
``adv/<check id>/eps_<e>``. Otherwise (option off, or no adversarial check saved any) the check
runs its own L-inf PGD on the first ``adv_limit`` test images: condition ``adversarial/pgd/eps_<e>``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from ..metric_keys import eps_segment, legal_segment
from ..scorecard import CheckResult, Series, Status
from .save_examples import saving

if TYPE_CHECKING:
    import numpy as np
    import torch

    from ..data.base import Dataset
    from .base import RunContext

Measure = Callable[[tuple[str, ...], "np.ndarray", "np.ndarray", tuple[str, ...]], dict[tuple[str, ...], float]]


def own_pgd_inputs(ctx: "RunContext", x: "torch.Tensor", y: "torch.Tensor", *, eps: float, steps: int, seeds: list[int]) -> "torch.Tensor":
    """L-inf PGD examples (N, C, H, W) in the model's bounds at absolute budget ``eps``."""
    from ..attacks.pgd import PGD

    attack = PGD(norm="linf", steps=steps)
    lo, hi = (float(b) for b in ctx.model.bounds)
    return attack.perturb(ctx.attack_model, x.to(ctx.device), y.to(ctx.device), eps, seeds=seeds, bounds=(lo, hi))


def saved_sources(ctx: "RunContext") -> list[tuple[str, str, str, float]]:
    """(check id, check name, norm, epsilon) of every adversarial check of this run that finished
    and saved its examples, in the order the checks ran."""
    from ..adversarial_examples import MINIMAL, load_index, root_of

    if not saving(ctx):
        return []
    index = load_index(root_of(ctx.out_dir))["checks"]
    out: list[tuple[str, str, str, float]] = []
    for cid, r in ctx.results.items():
        entry = index.get(cid)
        if entry is None or r.status is not Status.OK:
            continue
        if entry.get("kind") == MINIMAL:  # one folder of minimal examples, read at each of its epsilons
            out.extend((cid, str(entry["check"]), str(entry["norm"]), float(e)) for e in sorted(entry.get("epsilons", [])))
            continue
        for seg, e in sorted(entry.get("by_eps", {}).items(), key=lambda kv: float(kv[1]["eps"])):
            out.append((cid, str(entry["check"]), str(entry["norm"]), float(e["eps"])))
    return out


def measure_adversarial(ctx: "RunContext", logits: Callable[..., "np.ndarray"], measure: Measure, p: Any, P: tuple[str, ...], test: "Dataset", test_idx: list[int],
                        by_cond: dict[tuple[str, ...], dict[tuple[str, ...], float]], res: CheckResult) -> None:
    """Measure every adversarial condition into ``by_cond`` (see the module docstring);
    ``logits(tag, n, get)`` is the check's batched, resumable forward pass."""
    import torch

    from ..adversarial_examples import MINIMAL, load_index, root_of
    from ..adversarial_readers import MinimalAt, WorstCase
    from ..seeding import sample_seeds

    y = test.y.numpy()
    base = "/".join(P)
    sources = saved_sources(ctx)
    if sources:
        root = root_of(ctx.out_dir)
        index = load_index(root)["checks"]
        for cid, check, norm, eps in sources:
            if index[cid].get("kind") == MINIMAL:  # the minimal example where its norm <= eps, else the clean image
                mreader = MinimalAt(root, cid, eps)
                get = lambda a, b, r=mreader: torch.from_numpy(r.read(test_idx[a:b], test.ids[a:b], clean=test.images(slice(a, b)).numpy()).x_adv)  # noqa: E731
            else:
                wreader = WorstCase(root, cid, eps)
                get = lambda a, b, r=wreader: torch.from_numpy(r.read(test_idx[a:b], test.ids[a:b]).x_adv)  # noqa: E731
            z = logits(f"adv/{cid}/{eps:.6g}", len(test), get)
            cond = ("adv", legal_segment(cid), eps_segment(eps))
            by_cond[cond] = measure(cond, z, y, (p.primary_score,))
        res.notes.append(f"adversarial condition: the examples that {len({s[0] for s in sources})} adversarial check(s) of the suite counted ({', '.join(sorted({s[0] for s in sources}))}), read from {root.name}/ on all {len(test)} test images.")
        res.definitions[f"{base}/adversarial_source"] = (
            "adv/<check id>/eps_<e>: the inputs that adversarial check counted at budget e (--save-adversarial, OUT/adversarial/): per point, the valid adversarial "
            "example of the largest epsilon <= e of its sweep that broke it (worst case per sample, as its robust accuracy counts it), else the attack's output at e "
            "(a point it left robust), the clean image for a clean error; for a minimal-norm check, its minimal example where that norm is <= e, else the clean "
            "image; every test image.")
        _series(res, by_cond, sources, p)
        return
    if p.adv_limit > 0 and p.adv_eps > 0:
        lo, hi = (float(b) for b in ctx.model.bounds)
        eps = p.adv_eps * (hi - lo)
        adv = test.limit(p.adv_limit)
        seeds = sample_seeds(ctx.seed, "uncertainty/pgd", list(adv.ids))
        za = logits(f"pgd/{eps:.6g}", len(adv), lambda a, b: own_pgd_inputs(ctx, adv.images(slice(a, b)), adv.y[a:b], eps=eps, steps=p.adv_steps, seeds=seeds[a:b]).detach())
        acond = ("adversarial", "pgd", eps_segment(eps))
        by_cond[acond] = measure(acond, za, adv.y.numpy(), (p.primary_score,))
        if saving(ctx):  # asked for the checks' examples, but none exist: say what was used instead
            res.notes.append("adversarial condition: no adversarial check of the suite saved examples, so the check's own L-inf PGD was used (adversarial/pgd/eps_<e>).")
        why = "no adversarial check of this suite saved examples" if saving(ctx) else "--save-adversarial was off, so the suite's adversarial checks kept no examples"
        res.definitions[f"{base}/adversarial_source"] = (
            f"adversarial/pgd/eps_<e>: the uncertainty check's own L-inf PGD ({p.adv_steps} steps, eps = {p.adv_eps:g} x the bounds' width) on the first "
            f"{len(adv)} test images; {why}.")


def _series(res: CheckResult, by_cond: dict[tuple[str, ...], dict[tuple[str, ...], float]], sources: list[tuple[str, str, str, float]], p: Any) -> None:
    """Conformal coverage against epsilon, one line per (adversarial check, method, level)."""
    from ..uncertainty.protocol import level_segment

    for cid in dict.fromkeys(s[0] for s in sources):
        eps = [s[3] for s in sources if s[0] == cid]
        conds = [("adv", legal_segment(cid), eps_segment(e)) for e in eps]
        res.series[f"conformal_coverage_vs_eps_{legal_segment(cid)}"] = Series(
            x=[0.0, *eps],
            y={f"{m} {level_segment(lv)}": [by_cond.get(c, {}).get(("conformal", m, level_segment(lv), "coverage")) for c in [(), *conds]] for m in p.methods for lv in p.levels},
            x_label=f"epsilon of {cid} (0 = clean)", y_label="coverage", kind="line")


__all__ = ["measure_adversarial", "own_pgd_inputs", "saved_sources"]
