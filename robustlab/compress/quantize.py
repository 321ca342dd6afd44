"""Quantization through PyTorch's own stack: FX graph mode (``torch.ao.quantization.quantize_fx``)
for static int8 and QAT, ``quantize_dynamic`` for dynamic int8; casting for fp16/bf16.

Why FX graph mode: on this torch (2.14) it is the path whose converted model runs real integer
kernels on the CPU (``quantized::conv2d`` / ``quantized::linear`` on the x86/fbgemm engine) without
``torch.compile``; PT2E's ``convert_pt2e`` gives a reference model (quantize/dequantize around float
ops) that only becomes integer after lowering. ``torch.ao.quantization`` warns that it is deprecated
in favour of torchao; its warnings are silenced here and nothing is written by hand: observers,
fake quantization, conversion and kernels are PyTorch's.

A static variant is stored as its *fake-quantized* model (float weights plus every observer's scale
and zero point, a plain state dict); loading rebuilds the same graph and converts it, which is
deterministic, so the integer model is exactly the one calibrated. The fake-quantized model is also
the differentiable surrogate the attacks need (:class:`QuantizedNet`).

References: Jacob et al., "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference", CVPR 2018; Athalye et al., "Obfuscated Gradients Give a False
Sense of Security" (BPDA), ICML 2018. Checked against torch.ao.quantization's own convert_fx output.
"""

from __future__ import annotations

import copy
import enum
import warnings
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, cast as tcast

import torch
from torch import nn

from .methods import CompressionError

#: the quantized engine used for int8 kernels on the CPU (first one available)
ENGINES = ("x86", "fbgemm", "qnnpack")


@contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


def engine() -> str:
    """Select and return the CPU int8 engine (``x86`` where available)."""
    supported = torch.backends.quantized.supported_engines
    for name in ENGINES:
        if name in supported:
            if torch.backends.quantized.engine != name:
                torch.backends.quantized.engine = name
            return name
    raise CompressionError(f"this torch build has no int8 CPU engine (supported: {', '.join(supported)}); int8 variants cannot run here.")


def _example(input_shape: tuple[int, ...] | None) -> tuple[torch.Tensor, ...]:
    if input_shape is None:
        raise CompressionError("int8 quantization needs the model's input shape to trace it; pass --input-shape C,H,W.")
    return (torch.zeros(2, *input_shape),)


def prepare_fake_quant(net: nn.Module, input_shape: tuple[int, ...] | None) -> nn.Module:
    """A fake-quantized copy of ``net`` (FX graph, QAT qconfig of the CPU engine; conv-bn-relu fused).

    The copy is in eval mode: batch-norm statistics stay those of ``net``. Call :func:`calibrate`,
    then :func:`freeze`."""
    from torch.ao.quantization import get_default_qat_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_qat_fx

    eng = engine()
    with _quiet():
        try:
            prepared = prepare_qat_fx(copy.deepcopy(net).cpu().float().train(), get_default_qat_qconfig_mapping(eng), _example(input_shape))
        except (RuntimeError, TypeError, NotImplementedError, AttributeError) as exc:  # symbolic tracing of dynamic control flow
            msg = " ".join(str(exc).split())[:160]
            raise CompressionError(f"the model cannot be traced for int8 quantization ({type(exc).__name__}: {msg}); only FX-traceable models (no data-dependent control flow) can be quantized.") from exc
    return prepared.eval()


def calibrate(prepared: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Run ``batches`` (already normalised as the network sees them) through the observers; returns the count."""
    n = 0
    with torch.no_grad(), _quiet():
        for xb in batches:
            prepared(xb)
            n += int(xb.shape[0])
    return n


def freeze(prepared: nn.Module) -> nn.Module:
    """Fix every scale and zero point (observers off, fake quantization on, batch-norm frozen); eval mode."""
    from torch.ao.quantization import disable_observer, enable_fake_quant
    from torch.ao.nn.intrinsic.qat import freeze_bn_stats

    prepared.apply(disable_observer)
    prepared.apply(enable_fake_quant)
    prepared.apply(freeze_bn_stats)
    return prepared.eval()


def to_integer(prepared: nn.Module) -> nn.Module:
    """The integer model of a frozen fake-quantized model (``convert_fx``: int8 kernels)."""
    from torch.ao.quantization.quantize_fx import convert_fx

    engine()
    with _quiet():
        return convert_fx(tcast(Any, copy.deepcopy(prepared).eval())).eval()


def dynamic_integer(net: nn.Module) -> nn.Module:
    """``quantize_dynamic``: int8 weights of every ``nn.Linear``, activations quantized per batch."""
    from torch.ao.quantization import quantize_dynamic

    engine()
    with _quiet():
        return tcast(nn.Module, quantize_dynamic(copy.deepcopy(net).cpu().float().eval(), {nn.Linear}, dtype=torch.qint8)).eval()  # type: ignore[no-untyped-call]


def dynamic_surrogate(net: nn.Module, integer: nn.Module) -> nn.Module:
    """``net`` with every linear weight replaced by the dequantized int8 weight of ``integer``
    (activation rounding is not simulated: re-verification on the integer model covers it)."""
    sur = copy.deepcopy(net).cpu().float().eval()
    qmods = dict(integer.named_modules())
    with torch.no_grad():
        for name, mod in sur.named_modules():
            q = qmods.get(name)
            if isinstance(mod, nn.Linear) and q is not None and callable(getattr(q, "weight", None)):
                mod.weight.copy_(q.weight().dequantize())
    return sur


def cast(net: nn.Module, dtype: torch.dtype) -> nn.Module:
    """``net`` with weights in ``dtype``; inputs are cast to ``dtype`` and logits back to float32
    (forward hooks, so module names and feature layers are unchanged)."""
    net = net.to(dtype)

    def pre(_m: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)

    def post(_m: nn.Module, _i: Any, out: Any) -> Any:
        return out.float() if isinstance(out, torch.Tensor) else out

    net.register_forward_pre_hook(pre)
    net.register_forward_hook(post)
    return net


class GradientMode(str, enum.Enum):
    """How attacks differentiate an integer model: ``bpda`` (the fake-quantized surrogate's gradient,
    straight-through rounding) or ``exact`` (the integer model's own gradient: zero almost everywhere,
    what a tool that differentiates the quantized graph as written gets; for masking demonstrations)."""

    BPDA = "bpda"
    EXACT = "exact"


class QuantizedNet(nn.Module):
    """An integer model with a differentiable surrogate (BPDA, Athalye et al. 2018).

    Forward values are always the integer model's (int8 kernels, on the CPU), so every prediction,
    every attack's candidate and its re-verification come from the real integer model; with gradients
    enabled, the backward pass goes through ``surrogate`` (``GradientMode.BPDA``) or is zero
    (``GradientMode.EXACT``). Shapes: (N, C, H, W) -> (N, K) float32.
    """

    def __init__(self, integer: nn.Module, surrogate: nn.Module, *, gradient: GradientMode = GradientMode.BPDA) -> None:
        super().__init__()
        self.surrogate = surrogate  # first: penultimate-feature lookup finds the float head of the surrogate
        self.integer = integer
        self.gradient = gradient

    def _integer(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return tcast(torch.Tensor, self.integer(x.detach().cpu().float())).to(x.device)

    def _surrogate_hooked(self) -> bool:
        return any(m._forward_hooks or m._forward_pre_hooks for m in self.surrogate.modules())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self._integer(x)
        if not (torch.is_grad_enabled() and x.requires_grad):
            if self._surrogate_hooked():  # penultimate features (OOD detectors) come from the surrogate's layers, same scales
                with torch.no_grad():
                    self.surrogate(x)
            return q
        s = tcast(torch.Tensor, self.surrogate(x))
        if self.gradient is GradientMode.EXACT:
            return q + (s - s.detach()) * 0.0
        return s + (q - s).detach()

    def _apply(self, fn: Any, recurse: bool = True) -> "QuantizedNet":
        """moving the model (``.to(device)``, to a GPU, ``.double()``) reaches the surrogate only: the integer model's
        kernels are CPU kernels and its tensors stay as converted (inputs are moved to it)."""
        self.surrogate._apply(fn, recurse)  # type: ignore[no-untyped-call]
        return self


__all__ = ["GradientMode", "QuantizedNet", "calibrate", "cast", "dynamic_integer", "dynamic_surrogate", "engine", "freeze", "prepare_fake_quant", "to_integer"]
