"""FAB-T (targeted FAB, Croce & Hein 2020) as a registered attack, wrapping the reference code.

The reference's FAB-T is used as the engine, with the target classes of every point stacked into
one batch (:func:`fab_t_batched`): FAB-T with one restart starts from the clean point (no
randomness) and its iterations are per point, so each copy follows the trajectory of the
reference's sequential loop and the flags are the reference's.

Shapes: x (N, C, H, W) in bounds, y (N,) -> x_adv (N, C, H, W).
References: Croce & Hein, "Minimally distorted adversarial examples with a fast adaptive boundary
attack", ICML 2020; ``pyautoattack`` 0.2.0 ``FABAttack_PT``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from ..errors import SuiteError
from .base import ATTACKS, FixedEpsilonAttack
from .geometry import norms
from .threat import Norm
from .unit_box import from_unit_box, on_unit_box

__all__ = ["FABT", "fab_t_batched"]


@ATTACKS.register("fab-t")
class FABT(FixedEpsilonAttack):
    """Targeted FAB on the ``n_target_classes`` highest-logit classes (one restart, from the clean point)."""

    def __init__(self, *, norm: Norm | str = Norm.LINF, n_iter: int = 100, n_target_classes: int = 9, seed: int = 0) -> None:
        if n_iter < 1 or n_target_classes < 1:
            raise SuiteError(f"fab-t: n_iter and n_target_classes must be at least 1, got {n_iter}, {n_target_classes}.")
        self.norm = Norm.parse(norm)
        self.n_iter = int(n_iter)
        self.n_target_classes = int(n_target_classes)
        self.seed = int(seed)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, seeds: Sequence[int], early_stop: bool, targeted: bool, bounds: tuple[float, float]) -> torch.Tensor:
        if targeted:
            raise SuiteError("fab-t chooses its own target classes; call it untargeted.")
        ref, xu, eps_u = on_unit_box(model, x.contiguous(), eps, bounds)
        with torch.no_grad():
            k_cls = int(ref(xu[:1]).shape[1])
        fab = _reference_fab_batched()(ref, n_restarts=1, n_iter=self.n_iter, eps=eps_u, seed=self.seed, norm=self.norm.autoattack_name,
                                         verbose=False, device=x.device, n_target_classes=min(self.n_target_classes, max(k_cls - 1, 1)))
        return from_unit_box(fab_t_batched(fab, ref, xu, y, eps_u, self.norm).detach(), bounds)

    def rows_per_point(self) -> int:
        return self.n_target_classes

    def reference(self, aa: Any, xu: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
        """pyautoattack's own FAB-T loop (``aa.fab``, inputs in [0, 1])."""
        aa.fab.targeted = True
        aa.fab.n_restarts = 1
        aa.fab.seed = seed
        out: torch.Tensor = aa.fab.perturb(xu, y)
        return out


def _reference_fab_batched() -> type:
    from pyautoattack.fab_pt import FABAttack_PT

    class _BatchedTargetFAB(FABAttack_PT):  # type: ignore[misc]
        """Reference FAB-T whose target class is given per point (so all targets run in one batch).

        FAB attacks only the copies its own clean check finds correct; the indices of those copies
        are the first thing ``attack_single_run`` passes to ``check_shape``, so they are captured
        there and every copy keeps its own target even when that check drops some copies.
        """

        targets: torch.Tensor | None = None
        _kept: torch.Tensor | None = None
        _capture: bool = False

        def attack_single_run(self, x: torch.Tensor, y: Any = None, use_rand_start: bool = False, is_targeted: bool = False) -> Any:
            self._kept, self._capture = None, self.targets is not None
            try:
                return super().attack_single_run(x, y, use_rand_start=use_rand_start, is_targeted=is_targeted)
            finally:
                self._kept, self._capture = None, False

        def check_shape(self, x: torch.Tensor) -> torch.Tensor:
            out = super().check_shape(x)
            if self._capture:
                self._kept, self._capture = out, False
            return out  # type: ignore[no-any-return]

        def get_diff_logits_grads_batch_targeted(self, imgs: torch.Tensor, la: torch.Tensor, la_target: torch.Tensor) -> Any:
            t = la_target
            if self.targets is not None and self._kept is not None:
                t = self.targets.to(imgs.device)[self._kept.to(imgs.device)]
                assert t.shape[0] == imgs.shape[0], "FAB-T: one target per attacked copy"
            return super().get_diff_logits_grads_batch_targeted(imgs, la, t)

    return _BatchedTargetFAB



def fab_t_batched(fab: Any, ref_model: nn.Module, xu: torch.Tensor, y: torch.Tensor, eps_u: float, norm: Norm) -> torch.Tensor:
    """Reference FAB-T with the 9 target classes of every point stacked into one batch.

    FAB-T with one restart starts from the clean point (no randomness), and its iterations are
    per point, so each copy follows the trajectory the reference's sequential loop would give.
    A point is broken when any copy ends misclassified within eps (the reference's rule).
    """
    fab.targeted = True
    with torch.no_grad():
        order = ref_model(xu).sort(dim=1)[1]
    k = min(fab.n_target_classes, order.shape[1] - 1)
    n = xu.shape[0]
    xs = xu.repeat(k, 1, 1, 1)
    ys = y.repeat(k)
    fab.targets = torch.cat([order[:, -tc] for tc in range(2, k + 2)])
    fab.target_class = 2
    fab.device = xu.device
    fab.orig_dim = list(xs.shape[1:])
    fab.ndims = len(fab.orig_dim)
    try:
        with torch.no_grad():
            adv = fab.attack_single_run(xs, ys, use_rand_start=False, is_targeted=True)
    finally:
        fab.targets = None
    with torch.no_grad():
        wrong = ref_model(adv).argmax(1).ne(ys)
        inside = norms(adv - xs, norm) <= eps_u
    ok = (wrong & inside).reshape(k, n)
    out = xu.clone()
    for j in range(k - 1, -1, -1):  # the first target that succeeds wins, as in the sequential loop
        sel = ok[j]
        out[sel] = adv.reshape(k, n, *xu.shape[1:])[j][sel]
    return out
