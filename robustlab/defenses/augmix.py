"""AugMix training with the Jensen-Shannon consistency loss (Hendrycks et al. 2020)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SuiteError
from ..seeding import derive_seed
from .augmix_ops import augmix
from .base import DEFENSES, DefenseMethod, DefenseParams, LossOutput, ValMetric, positive


@dataclass(frozen=True)
class AugMixParams(DefenseParams):
    """The paper's defaults: 3 chains, depth 1..3 (``depth=-1``), severity 3, Dirichlet(1) and
    Beta(1, 1) (``alpha=1``), JSD weight 12; ``jsd=False`` trains on one AugMix view with CE only."""

    width: int = field(default=3, metadata={"cli": "augmix-width", "help": "Chains."})
    depth: int = field(default=-1, metadata={"cli": "augmix-depth", "help": "Ops per chain, -1 = uniform 1..3."})
    severity: float = field(default=3.0, metadata={"cli": "augmix-severity", "help": "Op magnitude."})
    alpha: float = field(default=1.0, metadata={"cli": "augmix-alpha", "help": "Dirichlet/Beta parameter."})
    jsd: bool = field(default=True, metadata={"help": "Jensen-Shannon consistency loss (--no-jsd: one AugMix view with CE only)."})
    jsd_weight: float = field(default=12.0, metadata={"help": "Weight of the Jensen-Shannon loss."})

    def validate(self) -> None:
        if self.width < 1:
            raise SuiteError(f"width (number of chains) must be at least 1, got {self.width}.")
        if self.depth == 0 or self.depth < -1 or self.depth > 3:
            raise SuiteError(f"depth must be 1..3, or -1 for uniform in 1..3; got {self.depth}.")
        if not 0 < self.severity <= 10:
            raise SuiteError(f"severity must be in (0, 10], got {self.severity}; the paper uses 3.")
        positive("alpha", self.alpha, allow_none=False)
        if self.jsd_weight < 0:
            raise SuiteError(f"jsd_weight must be >= 0, got {self.jsd_weight}; the paper uses 12.")


def jensen_shannon(logits_clean: torch.Tensor, logits_aug1: torch.Tensor, logits_aug2: torch.Tensor) -> torch.Tensor:
    """JS(p_clean, p_aug1, p_aug2) = mean_k KL(p_k || M), M = mean of the three, batch-averaged.

    Shapes: three (N, K) logits -> scalar. M is clamped to [1e-7, 1] before the log as in the
    reference code.
    """
    p = [F.softmax(z, dim=1) for z in (logits_clean, logits_aug1, logits_aug2)]
    log_m = torch.clamp((p[0] + p[1] + p[2]) / 3.0, 1e-7, 1).log()
    return sum(F.kl_div(log_m, pk, reduction="batchmean") for pk in p) / 3.0  # type: ignore[return-value]


@DEFENSES.register("augmix")
class AugMixTraining(DefenseMethod):
    """CE on the clean image + 12 * JS consistency between the clean image and two AugMix views.

    Views are seeded per image (``derive_seed(seed, "augmix", view)``). All three go through one
    forward pass, as in the reference code (batch-norm sees the three as one batch).

    Shapes: x (N, C, H, W) in bounds, y (N,) -> scalar loss.

    References: Hendrycks et al., "AugMix: A Simple Data Processing Method to Improve Robustness
    and Uncertainty", ICLR 2020; reference code github.com/google-research/augmix (``cifar.py``).
    """

    name = "augmix"
    description = "AugMix with the Jensen-Shannon consistency loss (Hendrycks et al. 2020)"
    references = "Hendrycks et al. ICLR 2020"
    Params = AugMixParams
    val_metric = ValMetric.CORRUPTION
    params: AugMixParams

    def view(self, x: torch.Tensor, seeds: Sequence[int], k: int, bounds: tuple[float, float]) -> torch.Tensor:
        p = self.params
        return augmix(x, [derive_seed(int(s), "augmix", k) for s in seeds], bounds=bounds, width=p.width, depth=p.depth, severity=p.severity, alpha=p.alpha)

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, seeds: Sequence[int], bounds: tuple[float, float]) -> LossOutput:
        n = x.shape[0]
        with torch.no_grad():
            a1 = self.view(x, seeds, 1, bounds)
            a2 = self.view(x, seeds, 2, bounds) if self.params.jsd else None
        if a2 is None:
            logits = model(a1)
            return LossOutput(F.cross_entropy(logits, y), logits.detach(), {})
        logits_all = model(torch.cat([x, a1, a2]))
        lc, l1, l2 = logits_all[:n], logits_all[n : 2 * n], logits_all[2 * n :]
        ce = F.cross_entropy(lc, y)
        js = jensen_shannon(lc, l1, l2)
        return LossOutput(ce + self.params.jsd_weight * js, lc.detach(), {"ce": float(ce.detach()), "jsd": float(js.detach())})
