"""Defenses: training methods that produce sturdier model files (``robustlab defend``).

Methods (registry :data:`DEFENSES`): ``pgd-at`` (Madry et al. 2018), ``trades`` (Zhang et al.
2019), ``fast-at`` (Wong et al. 2020), ``augmix`` (Hendrycks et al. 2020, with the JSD loss) and
``gaussian`` (noise augmentation for randomized smoothing, Cohen et al. 2019). One shared training
loop (:mod:`robustlab.defenses.trainer`) with per-epoch checkpoints and exact resume; the
end-to-end run with before/after evaluation is the defend pipeline, :func:`robustlab.pipelines.defend.run_defense`.
"""

from __future__ import annotations

from .base import DEFENSES, DefenseMethod, DefenseParams, LossOutput, ValMetric
from .trainer import EpochRecord, TrainConfig, TrainResult, train

__all__ = ["DEFENSES", "DefenseMethod", "DefenseParams", "EpochRecord", "LossOutput", "TrainConfig", "TrainResult", "ValMetric", "train"]
