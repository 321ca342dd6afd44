"""GPU fast paths, each opt-in with a safe default (fp32, no compile, contiguous memory).

- ``precision="fp32"`` (default): strict IEEE fp32. PyTorch's own default lets cuDNN run every
  convolution in TF32 (10-bit mantissa) on Ampere and later GPUs (``torch.backends.cudnn.allow_tf32``
  is True out of the box), so an "fp32" scorecard would have been TF32 for every convolution; fp32
  (and bf16, whose re-verification is the fp32 model) turns TF32 off for matmuls and convolutions.
- ``precision="tf32"``: TF32 matmuls/convolutions on Ampere+ GPUs (no effect on CPU).
- ``precision="bf16"``: attack iterations run under bf16 autocast through :class:`AutocastView`
  (``RunContext.attack_model``); every final adversarial example is re-verified on the fp32 model by
  the checks, which report how many flipped back.
- ``channels_last``: NHWC memory format for convolution-heavy models.
- ``compile``: ``torch.compile`` of the inner network (first batches are slow while it compiles).
Out-of-memory back-off lives in :meth:`RunContext.map_batches`.
"""

from __future__ import annotations

from typing import cast

import logging
from enum import Enum

import torch
from torch import nn

from .errors import RobustlabError
from .parsing import parse_enum
from .models.wrapper import RobustModel

log = logging.getLogger(__name__)


class Precision(str, Enum):
    FP32 = "fp32"
    TF32 = "tf32"
    BF16 = "bf16"

    @classmethod
    def parse(cls, v: "str | Precision") -> "Precision":
        return parse_enum(cls, v, "precision", error=RobustlabError)


class AutocastView(nn.Module):
    """Runs ``model`` under autocast (bf16) and returns fp32 logits. Same bounds and contract."""

    def __init__(self, model: RobustModel, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype

    @property
    def bounds(self) -> tuple[float, float]:
        return self.model.bounds

    @property
    def num_classes(self) -> int:
        return self.model.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, dtype=self.dtype):
            return cast("torch.Tensor", self.model(x).float())


def set_tf32(enabled: bool) -> None:
    """TF32 for CUDA matmuls and cuDNN convolutions, both on or both off (no effect on a CPU)."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def tf32_state() -> dict[str, bool]:
    """The flags as they are now (recorded in the scorecard's environment)."""
    return {"cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32), "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32)}


def apply_fast_paths(model: RobustModel, *, precision: str = "fp32", channels_last: bool = False, compile: bool = False) -> nn.Module | None:
    """Configure ``model`` in place; return the attack-iteration view (or None for plain fp32)."""
    p = Precision.parse(precision)
    dev = model.device
    set_tf32(p is Precision.TF32)  # process-wide flags: set for every precision, never left at PyTorch's default
    if channels_last:
        model.net = model.net.to(memory_format=torch.channels_last)
    if compile:
        model.net = torch.compile(model.net)  # type: ignore[assignment]
    if p is Precision.BF16:
        if dev.type == "cpu":
            log.info("bf16 autocast on CPU is slow on most processors; it is meant for GPUs")
        return AutocastView(model)
    return None
