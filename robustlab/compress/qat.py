"""Quantization-aware fine-tuning: the fake-quantized graph (:func:`~.quantize.prepare_fake_quant`)
trained with cross-entropy on clean inputs through robustlab's own training loop
(:func:`robustlab.defenses.trainer.train`), observers and fake quantization on.

References: Jacob et al., CVPR 2018 (QAT with fake quantization and straight-through rounding);
PyTorch's ``prepare_qat_fx`` / ``convert_fx`` do the graph work.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..data import Dataset
from ..defenses.base import DefenseMethod, LossOutput, ValMetric
from ..defenses.trainer import TrainConfig, train
from ..models.wrapper import RobustModel


class QATCrossEntropy(DefenseMethod):
    """Cross-entropy on clean inputs through the fake-quantized model (not a registered defense:
    only ``robustlab compress --method qat`` uses it). Shapes: x (N, C, H, W), y (N,) -> scalar."""

    name = "qat"
    description = "quantization-aware fine-tuning (clean cross-entropy through fake quantization)"
    references = "Jacob et al. CVPR 2018"
    val_metric = ValMetric.PGD

    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, seeds: Sequence[int], bounds: tuple[float, float]) -> LossOutput:
        logits = model(x)
        return LossOutput(F.cross_entropy(logits, y), logits.detach(), {})


def finetune(prepared: nn.Module, model: RobustModel, train_data: Dataset, *, epochs: int, batch_size: int, seed: int, lr: float | None = None) -> nn.Module:
    """Train ``prepared`` (the fake-quantized copy of ``model.net``) for ``epochs`` on ``train_data``
    (already in ``model.bounds``); returns it in eval mode. Checkpoints go to a temporary folder."""
    qmodel = RobustModel(prepared, model.info)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, seed=seed, lr=lr, val_limit=None)
    with tempfile.TemporaryDirectory(prefix="robustlab-qat-") as tmp:
        train(qmodel, QATCrossEntropy(), train_data, None, cfg, ckpt_dir=Path(tmp))
    return prepared.eval()


__all__ = ["QATCrossEntropy", "finetune"]
