"""Quantization through the maintained stack: torchao's PT2E flow for static int8 and QAT
(:mod:`.pt2e`: ``X86InductorQuantizer``, lowered to oneDNN int8 kernels) and torchao's ``quantize_``
for dynamic int8; casting for fp16/bf16; :class:`QuantizedNet`, the integer model with its BPDA
surrogate. Nothing is written by hand: observers, fake quantization, conversion, lowering and
kernels are torch's and torchao's. Files written by the earlier FX graph mode path load through
:mod:`.quantize_fx` (legacy).

A static variant is stored as its *fake-quantized* surrogate's state (float weights, batch-norm
statistics and every fake quantizer's scale and zero point); loading re-exports the same graph,
loads that state and converts and lowers it, which is deterministic, so the integer model is exactly
the one calibrated. The fake-quantized graph is also the differentiable surrogate the attacks need.

References: Jacob et al., "Quantization and Training of Neural Networks for Efficient
Integer-Arithmetic-Only Inference", CVPR 2018; Athalye et al., "Obfuscated Gradients Give a False
Sense of Security" (BPDA), ICML 2018.
"""

from __future__ import annotations

import copy
import enum
from typing import Any, cast as tcast

import torch
from torch import nn

from .pt2e import require_torchao

#: how the integer kernels of each quantized variant kind are produced (recorded in the variant file)
STACK_PT2E = "pt2e"
STACK_TORCHAO = "torchao"
STACK_FX = "fx"


def dynamic_integer(net: nn.Module) -> nn.Module:
    """torchao ``quantize_`` with ``Int8DynamicActivationInt8WeightConfig``: int8 per-channel weights
    of every ``nn.Linear``, activations quantized per row at run time, ``torch._int_mm`` on the CPU."""
    require_torchao()
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    out = copy.deepcopy(net).cpu().float().eval()
    quantize_(out, Int8DynamicActivationInt8WeightConfig(), filter_fn=lambda m, _name: isinstance(m, nn.Linear))
    return out


def dynamic_surrogate(net: nn.Module, integer: nn.Module) -> nn.Module:
    """``net`` with every linear weight replaced by the dequantized int8 weight of ``integer``
    (activation rounding is not simulated: re-verification on the integer model covers it)."""
    sur = copy.deepcopy(net).cpu().float().eval()
    qmods = dict(integer.named_modules())
    with torch.no_grad():
        for name, mod in sur.named_modules():
            q = qmods.get(name)
            w = getattr(q, "weight", None)
            if isinstance(mod, nn.Linear) and w is not None:
                deq = w() if callable(w) else w  # a legacy FX packed module exposes weight() (quantized)
                mod.weight.copy_(deq.dequantize() if hasattr(deq, "dequantize") else deq)
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


class _IntegerValueSurrogateGradient(torch.autograd.Function):
    """BPDA's straight-through step: the value is the integer model's logits bit for bit, the
    gradient flows to the surrogate's. (``s + (q - s).detach()`` rounds: on some CPUs its value
    differed from ``q`` in the last bit, so an attack candidate was not scored on the integer model
    exactly.)"""

    @staticmethod
    def forward(ctx: Any, s: torch.Tensor, q: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
        return q.detach().clone()

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ARG004
        return g, None


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
            if x.shape[0] == 0:  # a lowered graph is exported for batches of at least one
                return tcast(torch.Tensor, self.surrogate(x.detach())).float()
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
        return tcast(torch.Tensor, _IntegerValueSurrogateGradient.apply(s, q))

    def _apply(self, fn: Any, recurse: bool = True) -> "QuantizedNet":
        """moving the model (``.to(device)``, to a GPU, ``.double()``) reaches the surrogate only: the integer model's
        kernels are CPU kernels and its tensors stay as converted (inputs are moved to it)."""
        self.surrogate._apply(fn, recurse)  # type: ignore[no-untyped-call]
        return self


__all__ = ["GradientMode", "QuantizedNet", "STACK_FX", "STACK_PT2E", "STACK_TORCHAO", "cast", "dynamic_integer", "dynamic_surrogate"]
