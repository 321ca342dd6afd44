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
- ``fold_bn`` (on by default, every device): attack iterations run on a copy whose eval-mode batch norms
  are folded into the convolutions before them (:func:`robustlab.models.fold.fold_batch_norm`): the same
  function up to float rounding, about 20% cheaper per input gradient of a ResNet on a CPU. Like the bf16
  view, it only searches: clean flags, every adversarial example's verdict and the re-check are the
  model's own, and a candidate the view finds adversarial that the model does not is attacked again on
  the model (the ``flipped`` count). Its first call compares its logits with the model's and, if they
  differ by more than rounding, falls back to the model for good.
Out-of-memory back-off lives in :meth:`RunContext.map_batches`.
"""

from __future__ import annotations

from typing import cast

import copy
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


class _View(nn.Module):
    """An attack-iteration view of ``model``: the model's bounds and class count, its own forward."""

    def __init__(self, model: RobustModel) -> None:
        super().__init__()
        self.model = model

    @property
    def bounds(self) -> tuple[float, float]:
        return self.model.bounds

    @property
    def num_classes(self) -> int:
        return self.model.num_classes


class AutocastView(_View):
    """Runs ``model`` under autocast (bf16) and returns fp32 logits. Same bounds and contract."""

    def __init__(self, model: RobustModel, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__(model)
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, dtype=self.dtype):
            return cast("torch.Tensor", self.model(x).float())


class FoldedView(_View):
    """``model`` with its network replaced by a batch-norm-folded copy (:func:`folded_view`). Same bounds
    and contract. The first call checks the copy against ``model`` on the inputs it is given."""

    #: logits may differ by this fraction of their largest magnitude (at least 1) and still agree
    TOLERANCE = 1e-4

    _fast: nn.Module

    def __init__(self, model: RobustModel, fast: nn.Module, folded: int) -> None:
        super().__init__(model)
        object.__setattr__(self, "_fast", fast)  # not a registered submodule: its weights are a view's
        self.folded = folded
        self.checked = False
        self.fell_back = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fast is not self.model and hasattr(self.model, "output_kind"):
            # what the model learns after the copy was made (a final softmax is found on the first data batch)
            setattr(self._fast, "output_kind", self.model.output_kind)
        if not self.checked:
            self.checked = True
            with torch.no_grad():
                want, got = self.model(x.detach()), self._fast(x.detach())
            tol = self.TOLERANCE * max(1.0, float(want.abs().max()) if want.numel() else 1.0)
            if want.shape != got.shape or not bool(((want - got).abs() <= tol).all()):
                log.warning("the batch-norm-folded copy of the model disagrees with it (beyond %.1e); attacks run on the model itself", tol)
                object.__setattr__(self, "_fast", self.model)
                self.fell_back = True
        return cast("torch.Tensor", self._fast(x))


def folded_view(model: RobustModel) -> FoldedView | None:
    """A view of ``model`` whose network has its batch norms folded into the convolutions before them,
    or None when none folds. ``model`` itself is unchanged (its other modules are shared)."""
    from .models.fold import fold_batch_norm

    net = getattr(model, "net", None)
    if not isinstance(net, nn.Module) or getattr(model, "_input_dtype", None) is not None:
        return None
    done = fold_batch_norm(net)
    if done is None:
        return None
    fast = copy.copy(model)  # same contract, buffers and forward (a plugin's subclass keeps its own)
    object.__setattr__(fast, "_modules", {**model._modules, "net": done[0]})
    log.debug("attack iterations run on a copy with %d batch norms folded", done[1])
    return FoldedView(model, fast, done[1])


def folded_count(view: nn.Module | None) -> int:
    """Batch norms folded in an attack view (a :class:`FoldedView`, or one inside an :class:`AutocastView`);
    0 when the attacks iterate on the model's own network."""
    if isinstance(view, AutocastView):
        view = view.model
    return view.folded if isinstance(view, FoldedView) else 0


def set_tf32(enabled: bool) -> None:
    """TF32 for CUDA matmuls and cuDNN convolutions, both on or both off (no effect on a CPU)."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def tf32_state() -> dict[str, bool]:
    """The flags as they are now (recorded in the scorecard's environment)."""
    return {"cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32), "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32)}


def apply_fast_paths(model: RobustModel, *, precision: str = "fp32", channels_last: bool = False, compile: bool = False, fold_bn: bool = True) -> nn.Module | None:
    """Configure ``model`` in place; return the attack-iteration view (None: the attacks run on ``model``)."""
    p = Precision.parse(precision)
    dev = model.device
    set_tf32(p is Precision.TF32)  # process-wide flags: set for every precision, never left at PyTorch's default
    if channels_last:
        model.net = model.net.to(memory_format=torch.channels_last)
    folded = folded_view(model) if fold_bn and not compile else None  # torch.compile folds them itself
    if compile:
        model.net = torch.compile(model.net)  # type: ignore[assignment]
    if p is Precision.BF16:
        if dev.type == "cpu":
            log.info("bf16 autocast on CPU is slow on most processors; it is meant for GPUs")
        return AutocastView(cast(RobustModel, folded) if folded is not None else model)
    return folded
