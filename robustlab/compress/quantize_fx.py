"""Legacy loader: int8 variant files written before the move to PT2E (their ``compression`` record has
no ``stack``, or ``stack: fx``) were made with ``torch.ao.quantization``'s FX graph mode
(``prepare_qat_fx``/``convert_fx``) and ``quantize_dynamic``, which are deprecated upstream.

Only :func:`robustlab.compress.variant.rebuild` uses this module, to load such files exactly as they
were calibrated (their tensors are an FX graph's state dict); ``robustlab compress`` writes PT2E /
torchao variants (:mod:`.pt2e`, :mod:`.quantize`). The deprecation warnings of ``torch.ao.quantization``
are silenced here and only here.
"""

from __future__ import annotations

import copy
import warnings
from contextlib import contextmanager
from typing import Any, Iterator, cast as tcast

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



__all__ = ["dynamic_integer", "engine", "freeze", "prepare_fake_quant", "to_integer"]
