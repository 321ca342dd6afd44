"""Validity audit of adversarial evaluations.

Each function returns one :class:`AuditItem` with a verdict (``valid``, ``suspect``, ``invalid``),
a message that says what to do, and the evidence (plain numbers). The items follow AutoAttack's
flags (``pyautoattack/checks.py``: randomised forward pass, softmax outputs, zero gradients,
Square beating the white-box attacks) and the sanity checks of Carlini et al. (2019), "On
Evaluating Adversarial Robustness": clean flags that an independent fp32 pass confirms, non-increasing in epsilon,
about 0 at a very large epsilon, not lowered by more iterations or restarts; plus robustlab's own
re-check of every returned adversarial example.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..models.wrapper import are_probabilities
from ..scorecard import VERDICT_SEVERITY, AuditItem, Verdict, worst_verdict

__all__ = [
    "audit_randomness",
    "audit_softmax_output",
    "audit_gradients",
    "audit_black_box",
    "audit_clean_flags",
    "audit_monotone",
    "audit_large_eps",
    "audit_convergence",
    "audit_recheck",
    "overall_verdict",
]


def overall_verdict(items: Sequence[AuditItem]) -> Verdict:
    """The worst verdict of the items (``valid`` when there are none)."""
    worst = worst_verdict(i.verdict for i in items)
    return Verdict.VALID if worst is None else worst


def verdict_code(v: Verdict) -> float:
    """0 = valid, 1 = suspect, 2 = invalid (for the ``.../audit/verdict`` metric)."""
    return float(VERDICT_SEVERITY[v])


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
    is_prob = are_probabilities(out, tol=tol)
    ev = {"min_output": float(out.min()), "max_output": float(out.max()), "max_abs_row_sum_minus_1": float((out.sum(-1) - 1).abs().max())}
    if getattr(model, "output_kind", "logits") == "probabilities":  # a RobustModel already turns them into log-probabilities
        ev["log_taken_by_robustlab"] = True
        return AuditItem("softmax_outputs", Verdict.SUSPECT, "the network outputs probabilities (robustlab takes their log as logits): a float32 softmax "
                         "saturates at confident points, so gradients vanish there and attacks may be masked; remove the final softmax from the model.", ev)
    if is_prob:
        return AuditItem("softmax_outputs", Verdict.SUSPECT, "the model outputs probabilities, not logits: the CE loss saturates and masks gradients; remove the final softmax from the model.", ev)
    return AuditItem("softmax_outputs", Verdict.VALID, "the model outputs logits.", ev)


def audit_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> AuditItem:
    """Input gradients of the DLR and CE losses: zero or non-finite DLR gradients mean masked gradients.

    Follows AutoAttack (``pyautoattack/checks.py: check_zero_gradients`` runs on the DLR losses):
    DLR is invariant to the scale of the logits, so its gradient vanishes only where the model
    masks it. CE gradients also vanish on an honest but overconfident model (softmax saturates in
    float32), so zero CE gradients are reported as a note in the evidence, not as a verdict.
    Non-finite gradients of either loss are suspect. With fewer than 3 classes (no DLR) the CE
    gradient decides. Shapes: x (n, C, H, W) clean-correct points, y (n,).
    """
    from ..attacks.geometry import attack_loss
    from ..attacks.threat import Loss

    xg = x.detach().clone().requires_grad_(True)
    stats: dict[str, float] = {}
    zero: dict[Loss, int] = {}
    nonfinite_total = 0
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
        z = flat.abs().sum(1) == 0
        stats[f"{loss.value}_zero_gradient_fraction"] = float(z.float().mean()) if len(z) else 0.0
        stats[f"{loss.value}_nonfinite_gradient_fraction"] = float(nonfinite.float().mean()) if len(z) else 0.0
        zero[loss] = int(z.sum())
        nonfinite_total += int(nonfinite.sum())
    stats["n"] = int(x.shape[0])
    deciding = Loss.DLR if Loss.DLR in zero else Loss.CE
    if zero.get(deciding, 0) or nonfinite_total:
        return AuditItem(
            "gradients",
            Verdict.SUSPECT,
            f"some points have zero {deciding.value.upper()} or non-finite input gradients (gradient masking, e.g. quantisation or a non-differentiable layer): "
            "white-box attacks cannot work there; check the black-box and large-epsilon items, use BPDA / an adaptive attack.",
            stats,
        )
    note = ""
    if zero.get(Loss.CE, 0) and deciding is Loss.DLR:
        note = (f" Note: {zero[Loss.CE]} of {stats['n']} points have a zero CE gradient (softmax saturated: the model is overconfident there); "
                "the DLR-based attacks (APGD-T, AutoAttack) are not affected, CE-only attacks such as PGD with loss: ce may be weak on them.")
    return AuditItem("gradients", Verdict.VALID, f"{deciding.value.upper()} input gradients are non-zero and finite on every audited point.{note}", stats)


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


@torch.no_grad()
def audit_clean_flags(model: nn.Module, x: torch.Tensor, y: torch.Tensor, used: torch.Tensor) -> AuditItem:
    """The clean flags the check used, against an independent fp32 forward pass, one point at a time.

    Robust accuracy counts only points the check found clean-correct; if those flags came from a
    lower-precision view, from a batch-dependent model (e.g. BatchNorm in training mode) or from a
    wrong label alignment, robust accuracy is wrong too. Shapes: x (n, C, H, W), y (n,), used (n,) bool.
    """
    pred = torch.cat([model(x[i : i + 1]).float().argmax(1) for i in range(x.shape[0])]) if x.shape[0] else torch.zeros(0, dtype=torch.long, device=x.device)
    fresh = pred.eq(y.to(pred.device)).cpu()
    used = used.cpu().bool()
    diff = int((fresh != used).sum())
    ev = {"n": int(x.shape[0]), "disagreements": diff, "clean_correct_used": int(used.sum()), "clean_correct_fp32": int(fresh.sum())}
    if diff:
        return AuditItem(
            "clean_flags_fp32",
            Verdict.INVALID,
            f"the check's clean flags disagree with an independent fp32 forward pass (one point at a time) on {diff} of {x.shape[0]} points: "
            "the model is batch-dependent or non-deterministic (call model.eval()), or the check did not use the fp32 model; the robust accuracy is not trustworthy.",
            ev,
        )
    return AuditItem("clean_flags_fp32", Verdict.VALID, f"the check's clean flags equal an independent fp32 forward pass on all {x.shape[0]} audited points.", ev)


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
    from ..attacks.threat import Norm
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


def audit_convergence(*, name: str, n_total: int, n_robust: int, n_tested: int, broken_by_stronger: int, tolerance: float = 0.01, what: str = "") -> AuditItem:
    """A stronger run (more iterations / restarts) on robust points should break (almost) none.

    ``n_tested`` points drawn at random from the ``n_robust`` robust points (of ``n_total``) were
    attacked again and ``broken_by_stronger`` broke. The accuracy drop over the whole robust set is
    estimated as ``broken / n_tested * n_robust / n_total`` with a 95% Clopper-Pearson interval
    (exact when every robust point was tested). Flags when the estimate exceeds ``tolerance``.
    """
    from ..stats import clopper_pearson_interval

    frac = broken_by_stronger / n_tested if n_tested else 0.0
    scale = n_robust / n_total if n_total else 0.0
    drop = frac * scale
    if n_tested and n_tested < n_robust:
        iv = clopper_pearson_interval(broken_by_stronger, n_tested)
        low, high = iv.low * scale, iv.high * scale
    else:
        low = high = drop
    ev = {"n": n_total, "robust_points": n_robust, "robust_points_rechecked": n_tested, "broken_by_stronger_attack": broken_by_stronger,
          "accuracy_drop_estimate": drop, "accuracy_drop_interval": [low, high], "tolerance": tolerance, "stronger_attack": what}
    if broken_by_stronger > 0 and drop > tolerance:
        return AuditItem(
            name,
            Verdict.SUSPECT,
            f"a stronger attack ({what}) broke {broken_by_stronger} of {n_tested} sampled robust points: robust accuracy is likely "
            f"{drop:.2%} too high (95% interval {low:.2%} to {high:.2%}); the attack has not converged, raise steps/restarts.",
            ev,
        )
    return AuditItem(name, Verdict.VALID, f"a stronger attack ({what}) lowers robust accuracy by an estimated {drop:.2%} (95% interval {low:.2%} to {high:.2%}).", ev)


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

