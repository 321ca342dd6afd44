"""GPU fast paths, each opt-in with a safe default (fp32, no compile, contiguous memory).

- ``precision="fp32"`` (default): strict IEEE fp32. PyTorch's own default lets cuDNN run every
  convolution in TF32 (10-bit mantissa) on Ampere and later GPUs (``torch.backends.cudnn.allow_tf32``
  is True out of the box), so an "fp32" scorecard would have been TF32 for every convolution; fp32
  (and bf16, whose re-verification is the fp32 model) turns TF32 off for matmuls and convolutions.
- ``precision="tf32"``: TF32 matmuls/convolutions on Ampere+ GPUs (no effect on CPU).
- ``precision="bf16"``: attack iterations run under bf16 autocast through :class:`AutocastView`
  (``RunContext.attack_model``); every final adversarial example is re-verified on the fp32 model by
  the checks, which report how many flipped back.
  On a CPU it pays only with bf16 in hardware (:func:`cpu_native_bf16`); otherwise oneDNN emulates it.
- ``channels_last``: NHWC memory format for convolution-heavy models.
- ``compile``: ``torch.compile`` of the inner network (first batches are slow while it compiles).
- ``fold_bn`` (on by default, every device): attack iterations run on a copy whose eval-mode batch norms
  are folded into the convolutions before them (:func:`robustlab.models.fold.fold_batch_norm`): the same
  function up to float rounding, about 20% cheaper per input gradient of a ResNet on a CPU. Like the bf16
  view, it only searches: clean flags, every adversarial example's verdict and the re-check are the
  model's own, and a candidate the view finds adversarial that the model does not is attacked again on
  the model (the ``flipped`` count). Its first call compares its logits with the model's and, if they
  differ by more than rounding, falls back to the model for good. On a CPU, forward passes of at least
  ``FoldedView.CHANNELS_LAST_ROWS`` images run on a channels-last copy of the folded network (1.09-1.41x
  cheaper per row from 18 rows of a CIFAR ResNet-18 on 2 threads, slower at 2-8 rows), checked against
  the model on its first call like the folded copy; the rows of one forward pass never depend on the
  layout chosen for another.
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
    and contract. The first call checks the copy against ``model`` on the inputs it is given.

    On a CPU, a batch of at least ``channels_last_rows`` images (4-D inputs) runs on a channels-last
    copy of the folded network, built and checked against ``model`` on the first such batch; a copy
    that disagrees is dropped and the contiguous one serves every batch."""

    #: logits may differ by this fraction of their largest magnitude (at least 1) and still agree
    TOLERANCE = 1e-4
    #: the smallest CPU batch that runs channels-last (cost per row against contiguous, CIFAR ResNet-18, 2 threads,
    #: bench/channels_last_view.py: 0.92-0.99x at 2 rows, 0.94-0.95x at 8, 1.09-1.41x at 18-64)
    CHANNELS_LAST_ROWS = 16

    _fast: nn.Module
    _fast_cl: nn.Module | None

    def __init__(self, model: RobustModel, fast: nn.Module, folded: int, *, channels_last_rows: int | None = CHANNELS_LAST_ROWS) -> None:
        super().__init__(model)
        object.__setattr__(self, "_fast", fast)  # not a registered submodule: its weights are a view's
        object.__setattr__(self, "_fast_cl", None)
        self.folded = folded
        self.checked = False
        self.fell_back = False
        self.channels_last_rows = channels_last_rows
        self.channels_last_calls = 0

    @property
    def channels_last_in_use(self) -> bool:
        """Whether large CPU batches have run on the channels-last copy."""
        return self._fast_cl is not None

    def _agrees(self, x: torch.Tensor, fast: nn.Module, *, failure_disagrees: bool = True) -> bool:
        """Whether ``fast`` gives the model's logits on ``x``; a ``fast`` that raises where the model
        runs disagrees (``failure_disagrees=False``: its error propagates)."""
        from .models.fold import copy_agrees, logits_agree

        with torch.no_grad():
            want = self.model(x.detach())  # the model's own error, if any, is the caller's
            if failure_disagrees:
                return copy_agrees(want, lambda: fast(x.detach()), tolerance=self.TOLERANCE)
            return logits_agree(want, fast(x.detach()), tolerance=self.TOLERANCE)

    def _channels_last(self, x: torch.Tensor) -> nn.Module | None:
        """The channels-last copy for this batch, or None (a GPU, a small batch, not an image batch, a
        copy that disagreed, or the attacks already run on the model)."""
        rows = self.channels_last_rows
        if rows is None or x.device.type != "cpu" or x.ndim != 4 or x.shape[0] < rows or self._fast is self.model:
            return None
        if self._fast_cl is None:
            self.channels_last_rows = None  # until the copy below is checked: built once, whatever happens
            net = getattr(self._fast, "net", None)
            if not isinstance(net, nn.Module):
                return None
            fast_cl = _with_net(self._fast, copy.deepcopy(net).to(memory_format=torch.channels_last))
            try:
                ok = self._agrees(x, fast_cl, failure_disagrees=False)
            except RuntimeError as exc:  # a layout-bound operation (``.view`` of a spatial map) refuses the layout
                log.debug("no channels-last attack copy: %s", exc)
                return None
            if not ok:
                log.warning("the channels-last copy of the batch-norm-folded network disagrees with the model; attacks use the contiguous copy")
                return None
            object.__setattr__(self, "_fast_cl", fast_cl)
            self.channels_last_rows = rows
        return self._fast_cl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._fast is not self.model and hasattr(self.model, "output_kind"):
            # what the model learns after the copy was made (a final softmax is found on the first data batch)
            setattr(self._fast, "output_kind", self.model.output_kind)
            if self._fast_cl is not None:
                setattr(self._fast_cl, "output_kind", self.model.output_kind)
        if not self.checked:
            self.checked = True
            if not self._agrees(x, self._fast):
                log.warning("the batch-norm-folded copy of the model disagrees with it (beyond %.1e of its logits); attacks run on the model itself", self.TOLERANCE)
                object.__setattr__(self, "_fast", self.model)
                self.fell_back = True
        fast = self._channels_last(x)
        if fast is not None:
            self.channels_last_calls += 1
            return cast("torch.Tensor", fast(x))
        return cast("torch.Tensor", self._fast(x))


def _with_net(model: nn.Module, net: nn.Module) -> nn.Module:
    """A shallow copy of ``model`` running ``net``: same contract, buffers and forward (a plugin's
    subclass keeps its own); ``model`` and its other modules are shared, never changed."""
    out = copy.copy(model)
    object.__setattr__(out, "_modules", {**model._modules, "net": net})
    return out


def folded_view(model: RobustModel, *, channels_last_rows: int | None = FoldedView.CHANNELS_LAST_ROWS) -> FoldedView | None:
    """A view of ``model`` whose network has its batch norms folded into the convolutions before them,
    or None when none folds. ``model`` itself is unchanged (its other modules are shared).
    ``channels_last_rows``: the smallest CPU batch run on a channels-last copy (None: never)."""
    from .models.fold import fold_batch_norm

    net = getattr(model, "net", None)
    if not isinstance(net, nn.Module) or getattr(model, "_input_dtype", None) is not None:
        return None
    done = fold_batch_norm(net)
    if done is None:
        return None
    fast = _with_net(model, done[0])
    log.debug("attack iterations run on a copy with %d batch norms folded", done[1])
    return FoldedView(model, fast, done[1], channels_last_rows=channels_last_rows)


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


#: CPU features (``torch.cpu.get_capabilities()``, from cpuinfo) that give oneDNN bf16 dot products in hardware
NATIVE_BF16_FEATURES = ("avx512_bf16", "amx_bf16", "bf16", "sve_bf16")


def cpu_native_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic in hardware for oneDNN (AVX-512 BF16 or AMX on x86, e.g. Intel
    Cooper Lake / Sapphire Rapids and AMD Zen 4 and later; BF16 on Arm). Without it oneDNN emulates bf16
    (``torch.ops.mkldnn._is_mkldnn_bf16_supported`` says yes on any AVX-512 CPU, emulation included) and
    autocast costs more than fp32."""
    try:
        caps = torch.cpu.get_capabilities()
        onednn = bool(torch.backends.mkldnn.is_available())  # type: ignore[no-untyped-call]
        return onednn and any(bool(caps.get(f)) for f in NATIVE_BF16_FEATURES)
    except (AttributeError, RuntimeError):  # an older torch without the query, or no cpuinfo
        return False


def bf16_cpu_note() -> str:
    """What ``--precision bf16`` does for speed on this CPU (logged when it is asked for on one)."""
    if cpu_native_bf16():
        return ("bf16 autocast on this CPU runs on its native bf16 instructions: a CIFAR ResNet-18's forward and input-gradient passes "
                "cost 0.51-0.63x of fp32 at 8-27 rows on a 2-core AMD Zen 5 (0.75-0.82x at 2 rows); the attacks search in bf16 and every verdict stays fp32")
    return "bf16 autocast on this CPU is emulated (no AVX-512 BF16 or AMX): expect it slower than fp32; it is meant for GPUs and bf16-capable CPUs"


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
    # torch.compile folds them itself; a channels-last network needs no second, channels-last copy
    folded = folded_view(model, channels_last_rows=None if channels_last else FoldedView.CHANNELS_LAST_ROWS) if fold_bn and not compile else None
    if compile:
        model.net = torch.compile(model.net)  # type: ignore[assignment]
    if p is Precision.BF16:
        if dev.type == "cpu":
            log.info(bf16_cpu_note())
        return AutocastView(cast(RobustModel, folded) if folded is not None else model)
    return folded
