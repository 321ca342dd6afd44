"""Validity audit of adversarial evaluations.

Each function returns one :class:`AuditItem` with a verdict (``valid``, ``suspect``, ``invalid``),
a message that says what to do, and the evidence (plain numbers). The items follow AutoAttack's
flags (``pyautoattack/checks.py``: randomised forward pass, softmax outputs, zero gradients,
Square beating the white-box attacks) and the sanity checks of Carlini et al. (2019), "On
Evaluating Adversarial Robustness": robust accuracy <= clean accuracy, non-increasing in epsilon,
about 0 at a very large epsilon, not lowered by more iterations or restarts; plus robustlab's own
re-check of every returned adversarial example.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..scorecard import AuditItem, Verdict

__all__ = [
    "audit_randomness",
    "audit_softmax_output",
    "audit_gradients",
    "audit_black_box",
    "audit_robust_le_clean",
    "audit_monotone",
    "audit_large_eps",
    "audit_convergence",
    "audit_recheck",
    "overall_verdict",
]

_ORDER = {Verdict.VALID: 0, Verdict.SUSPECT: 1, Verdict.INVALID: 2}


def overall_verdict(items: Sequence[AuditItem]) -> Verdict:
    """The worst verdict of the items (``valid`` when there are none)."""
    return max((i.verdict for i in items), key=lambda v: _ORDER[v], default=Verdict.VALID)


def verdict_code(v: Verdict) -> float:
    """0 = valid, 1 = suspect, 2 = invalid (for the ``.../audit/verdict`` metric)."""
    return float(_ORDER[v])


@torch.no_grad()
def audit_randomness(model: nn.Module, x: torch.Tensor, *, handled: bool, repeats: int = 5, tol: float = 1e-4) -> AuditItem:
    """Forward the same inputs ``repeats`` times; differing outputs mean a randomised model.

    ``handled`` says whether the check already accounts for randomness (AutoAttack ``rand``, EOT).
    Evidence: the largest L2 distance between L2-normalised outputs, and whether predictions changed.
    """
    outs = [model(x).float() for _ in range(repeats)]
    normed = [o / (o.norm(dim=1, keepdim=True) + 1e-10) for o in outs]
    max_diff = max(float((normed[i] - normed[j]).norm(dim=1).max()) for i in range(repeats) for j in range(i + 1, repeats)) if repeats > 1 else 0.0
    pred_changed = any(bool((o.argmax(1) != outs[0].argmax(1)).any()) for o in outs[1:])
    ev = {"max_output_distance": max_diff, "predictions_changed": pred_changed, "repeats": repeats, "tolerance": tol}
    if max_diff <= tol and not pred_changed:
        return AuditItem("randomized_forward", Verdict.VALID, "the forward pass is deterministic.", ev)
    if handled:
        return AuditItem("randomized_forward", Verdict.VALID, "the forward pass is randomised and the check averages gradients over randomness (EOT).", ev)
    return AuditItem(
        "randomized_forward",
        Verdict.SUSPECT,
        "the forward pass is randomised: gradients and success checks are noisy; use the autoattack check with version: rand (EOT), or make the model deterministic (model.eval()).",
        ev,
    )


@torch.no_grad()
def audit_softmax_output(model: nn.Module, x: torch.Tensor, *, tol: float = 1e-5) -> AuditItem:
    """Outputs in [0, 1] summing to 1 are probabilities, not logits (attacks on them saturate)."""
    out = model(x).float()
    is_prob = bool(out.max() < 1 + tol) and bool(out.min() > -tol) and bool(((out.sum(-1) - 1).abs() < tol).all())
    ev = {"min_output": float(out.min()), "max_output": float(out.max()), "max_abs_row_sum_minus_1": float((out.sum(-1) - 1).abs().max())}
    if is_prob:
        return AuditItem("softmax_outputs", Verdict.SUSPECT, "the model outputs probabilities, not logits: the CE loss saturates and masks gradients; remove the final softmax from the model.", ev)
    return AuditItem("softmax_outputs", Verdict.VALID, "the model outputs logits.", ev)


def audit_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> AuditItem:
    """Input gradients of the CE and DLR losses: zero or non-finite ones mean masked gradients.

    Shapes: x (n, C, H, W) clean-correct points, y (n,).
    """
    from ..attacks.base import Loss, attack_loss

    xg = x.detach().clone().requires_grad_(True)
    stats: dict[str, float] = {}
    bad_total = 0
    for loss in (Loss.CE, Loss.DLR):
        with torch.enable_grad():
            logits = model(xg)
            li = attack_loss(logits, y, loss, targeted=False) if logits.shape[1] >= 3 or loss is Loss.CE else None
            if li is None:
                continue
            g = torch.autograd.grad(li.sum(), xg, allow_unused=True)[0]
        if g is None:
            g = torch.zeros_like(xg)
        flat = g.flatten(1)
        nonfinite = ~torch.isfinite(flat).all(1)
        zero = flat.abs().sum(1) == 0
        stats[f"{loss.value}_zero_gradient_fraction"] = float(zero.float().mean()) if len(zero) else 0.0
        stats[f"{loss.value}_nonfinite_gradient_fraction"] = float(nonfinite.float().mean()) if len(zero) else 0.0
        bad_total += int((zero | nonfinite).sum())
    stats["n"] = int(x.shape[0])
    if bad_total:
        return AuditItem(
            "gradients",
            Verdict.SUSPECT,
            "some points have zero or non-finite input gradients (gradient masking, e.g. quantisation or a non-differentiable layer): "
            "white-box attacks cannot work there; check the black-box and large-epsilon items, use BPDA / an adaptive attack.",
            stats,
        )
    return AuditItem("gradients", Verdict.VALID, "input gradients are non-zero and finite on every audited point.", stats)


def audit_black_box(*, n: int, robust_white: int, robust_after_black: int, alpha: float = 0.002) -> AuditItem:
    """Square (black-box) breaking points the white-box attacks left robust signals gradient masking.

    Flags when it lowers robust accuracy by more than ``alpha`` (AutoAttack's ``check_square_sr``).
    """
    drop = (robust_white - robust_after_black) / n if n else 0.0
    ev = {"n": n, "robust_after_white_box": robust_white, "robust_after_black_box": robust_after_black, "accuracy_drop": drop, "threshold": alpha}
    if drop > alpha:
        return AuditItem(
            "black_box_beats_white_box",
            Verdict.SUSPECT,
            f"the black-box Square attack broke {robust_white - robust_after_black} points the gradient attacks missed: gradients are likely masked; "
            "the robust accuracy may still be too high, run an adaptive attack.",
            ev,
        )
    return AuditItem("black_box_beats_white_box", Verdict.VALID, "the black-box attack found nothing the white-box attacks missed.", ev)


def audit_robust_le_clean(*, clean_accuracy: float, robust_accuracy: dict[float, float]) -> AuditItem:
    """Robust accuracy above clean accuracy is impossible under the definition: a bug."""
    worse = {str(e): a for e, a in robust_accuracy.items() if a > clean_accuracy + 1e-12}
    ev = {"clean_accuracy": clean_accuracy, "violations": worse}
    if worse:
        return AuditItem("robust_le_clean", Verdict.INVALID, "robust accuracy exceeds clean accuracy: the evaluation is broken; report this as a robustlab bug.", ev)
    return AuditItem("robust_le_clean", Verdict.VALID, "robust accuracy <= clean accuracy at every epsilon.", ev)


def audit_monotone(robust_accuracy: dict[float, float], *, n: int) -> AuditItem:
    """Robust accuracy must not rise with epsilon (a larger ball contains the smaller one)."""
    eps = sorted(robust_accuracy)
    rises = [{"from_eps": a, "to_eps": b, "rise": robust_accuracy[b] - robust_accuracy[a]} for a, b in zip(eps, eps[1:]) if robust_accuracy[b] > robust_accuracy[a] + 1e-12]
    ev = {"robust_accuracy": {str(e): robust_accuracy[e] for e in eps}, "rises": rises, "n": n}
    if rises:
        return AuditItem(
            "monotone_in_eps",
            Verdict.SUSPECT,
            "robust accuracy rises with epsilon: the attack is too weak at the larger budget (not converged or masked gradients); add steps or restarts.",
            ev,
        )
    return AuditItem("monotone_in_eps", Verdict.VALID, "robust accuracy does not rise with epsilon.", ev)


def audit_large_eps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, bounds: tuple[float, float], seeds: Sequence[int], threshold: float = 0.1, steps: int = 50) -> AuditItem:
    """PGD (Linf, 50 steps, random start) with eps = the whole input range must drive accuracy to about 0.

    Shapes: x (n, C, H, W), y (n,). Flags when more than ``threshold`` of the points survive.
    """
    from ..attacks.base import Norm
    from ..attacks.pgd import PGD

    lo, hi = bounds
    eps = hi - lo
    xa = PGD(norm=Norm.LINF, steps=steps, abs_stepsize=eps / 8, random_start=True).perturb(model, x, y, eps, seeds=seeds, bounds=bounds)
    with torch.no_grad():
        acc = float(model(xa).argmax(1).eq(y).float().mean()) if x.shape[0] else 0.0
    ev = {"eps": eps, "steps": steps, "n": int(x.shape[0]), "accuracy": acc, "threshold": threshold}
    if acc > threshold:
        return AuditItem(
            "large_eps_accuracy",
            Verdict.SUSPECT,
            f"with eps = the whole input range, PGD leaves {acc:.0%} of the points correct (expected about 0%): gradients are masked or the attack is broken.",
            ev,
        )
    return AuditItem("large_eps_accuracy", Verdict.VALID, f"a very large epsilon drives accuracy to {acc:.0%}.", ev)


def audit_convergence(*, name: str, n_total: int, n_tested: int, broken_by_stronger: int, tolerance: float = 0.01, what: str = "") -> AuditItem:
    """A stronger run (more iterations / restarts) on robust points should break (almost) none.

    Flags when it breaks more than ``tolerance`` of all n points (at least 1 point).
    """
    drop = broken_by_stronger / n_total if n_total else 0.0
    ev = {"n": n_total, "robust_points_rechecked": n_tested, "broken_by_stronger_attack": broken_by_stronger, "accuracy_drop_lower_bound": drop, "tolerance": tolerance, "stronger_attack": what}
    if broken_by_stronger > 0 and drop > tolerance:
        return AuditItem(name, Verdict.SUSPECT, f"a stronger attack ({what}) broke {broken_by_stronger} of {n_tested} points left robust: the attack has not converged; raise steps/restarts.", ev)
    return AuditItem(name, Verdict.VALID, f"a stronger attack ({what}) lowered robust accuracy by at most {drop:.2%}.", ev)


def audit_recheck(*, claimed: int, rejected: int, reasons: dict[str, int]) -> AuditItem:
    """Every adversarial example an attack returned was re-verified by robustlab."""
    ev = {"claimed_adversarial": claimed, "rejected": rejected, **reasons}
    if rejected:
        return AuditItem(
            "adversarial_recheck",
            Verdict.SUSPECT,
            f"{rejected} of {claimed} adversarial examples returned by an attack failed robustlab's re-check (outside the ball or bounds, non-finite, or correctly classified); they were not counted.",
            ev,
        )
    return AuditItem("adversarial_recheck", Verdict.VALID, f"all {claimed} adversarial examples were re-verified: finite, inside the eps ball and the bounds, misclassified.", ev)

