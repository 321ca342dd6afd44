"""Static int8 and QAT through PT2E (``torch.export`` + torchao's ``X86InductorQuantizer``), lowered to
oneDNN int8 kernels on the CPU.

Flow (all of it torch's and torchao's; nothing here quantizes by hand):

1. :func:`prepare_fake_quant` exports the float network with a dynamic batch dimension and inserts
   torchao's fake quantizers (``prepare_qat_pt2e`` with the x86 inductor QAT config: uint8
   per-tensor activations, int8 per-channel symmetric weights; batch-norm folded into the
   convolutions beforehand with the model's running statistics). The result is the
   *surrogate*: a float graph whose fake quantization rounds with a straight-through gradient.
2. :func:`calibrate` runs training-like images through it (observers on, batch-norm in eval mode),
   :func:`freeze` fixes every scale and zero point. Its state dict (float weights, batch-norm
   statistics, scales, zero points) is what a variant file stores.
3. :func:`to_integer` converts a copy (``convert_pt2e``: quantize/dequantize around float ops) and
   lowers it with torchao's x86 inductor freezing passes (the passes of
   ``torchao.quantization.pt2e.lowering.lower_pt2e_quantized_to_x86``, re-exported with a dynamic
   batch dimension): the lowered graph calls ``onednn.qconv_pointwise`` / ``onednn.qlinear_pointwise``,
   i.e. real int8 kernels (:func:`integer_ops` lists them). Lowering takes seconds (about 5 s for the
   digits CNN, 30-60 s for a CIFAR ResNet-18 on two busy cores); the lowered model is cached per
   process by the content of the frozen state (:data:`_CACHE`), so loading the same variant twice
   lowers once.

References: Jacob et al., CVPR 2018 (integer-arithmetic-only inference, fake quantization);
torchao's PT2E tutorials (``prepare_pt2e``/``prepare_qat_pt2e``/``convert_pt2e``, X86InductorQuantizer).
"""

from __future__ import annotations

import copy
import hashlib
import types
import warnings
from collections import OrderedDict
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, cast as tcast

import torch
from torch import nn

from .methods import CompressionError

#: what the lowered graph calls for the int8 layers (oneDNN kernels registered by torch)
INTEGER_OPS = ("onednn.qconv_pointwise", "onednn.qconv2d_pointwise", "onednn.qlinear_pointwise")
#: lowered integer models kept per process (key: sha256 of the frozen state and the input shape)
_CACHE: "OrderedDict[str, nn.Module]" = OrderedDict()
_CACHE_SIZE = 8


def require_torchao() -> str:
    """The installed torchao version; a one-line :class:`CompressionError` (exit 2) when it is missing."""
    import logging

    pytree_log = logging.getLogger("torch.utils._pytree")  # torchao's import logs a register_constant deprecation notice there
    level = pytree_log.level
    pytree_log.setLevel(logging.ERROR)
    try:
        import torchao
    except ImportError:
        raise CompressionError("int8 variants (int8-static, int8-dynamic, qat) need torchao; install it with pip install 'robustlab[quant]'.") from None
    finally:
        pytree_log.setLevel(level)
    return str(getattr(torchao, "__version__", "unknown"))


@contextmanager
def _torchao_chatter() -> Iterator[None]:
    """torchao's informational warnings about layers it leaves in float (e.g. max-pool on an
    unquantized input) and its pytree registration notices; deprecations are not silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"The input of .* is not quantized", category=UserWarning)
        warnings.filterwarnings("ignore", message=r".*register_constant.*")
        yield


def _example(input_shape: tuple[int, ...] | None) -> tuple[torch.Tensor, ...]:
    if input_shape is None:
        raise CompressionError("int8 quantization needs the model's input shape to trace it; pass --input-shape C,H,W.")
    return (torch.zeros(2, *input_shape),)


def _export(net: nn.Module, example: tuple[torch.Tensor, ...], *, strict: bool = False) -> Any:
    batch = torch.export.Dim("batch", min=1)
    return torch.export.export(net, example, dynamic_shapes=({0: batch},), strict=strict)


class _FeatureTap(nn.Linear):
    """Stands in the surrogate graph for its last linear layer (``F.linear(x, w, b)`` with the graph's
    own fake-quantized weight), so the penultimate-feature lookup (the input of the last
    ``nn.Linear``) and its forward hook see the surrogate's features. Holds no parameters."""

    def __init__(self) -> None:
        nn.Module.__init__(self)
        self.in_features = self.out_features = 0
        self.register_parameter("weight", None)
        self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        return torch.nn.functional.linear(x, weight, bias)


def _tap_last_linear(gm: torch.fx.GraphModule) -> None:
    from ..models.graph_tap import reroute_last_linear

    reroute_last_linear(gm, lambda _node: _FeatureTap())


def prepare_fake_quant(net: nn.Module, input_shape: tuple[int, ...] | None) -> nn.Module:
    """The fake-quantized surrogate of ``net`` (exported in eval mode, batch-norm folded into the
    preceding convolutions with ``net``'s statistics, then ``prepare_qat_pt2e`` with the x86 inductor
    config); ``.train()``/``.eval()`` work on it (QAT then trains the folded convolutions). Call
    :func:`calibrate`, then :func:`freeze`."""
    require_torchao()
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import X86InductorQuantizer, get_default_x86_inductor_quantization_config

    from torchao.quantization.pt2e.utils import _fuse_conv_bn_

    example = _example(input_shape)
    base = copy.deepcopy(net).cpu().float().eval()
    with _torchao_chatter():
        try:
            gm = _export(base, example).module()
        except Exception as exc:  # torch.export raises many kinds (UserError, Unsupported, GuardOnDataDependent...)
            msg = " ".join(str(exc).split())[:160]
            raise CompressionError(f"the model cannot be exported for int8 quantization ({type(exc).__name__}: {msg}); only torch.export-able models (no data-dependent control flow) can be quantized.") from exc
        _fuse_conv_bn_(gm)  # batch-norm folded into the convolutions first (as prepare_pt2e does): convert_pt2e of an unfolded QAT graph takes minutes on a ResNet-18
        quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config(is_qat=True))
        prepared = prepare_qat_pt2e(gm, quantizer)
    _tap_last_linear(prepared)
    _train_eval(prepared)
    prepared.eval()
    return tcast(nn.Module, prepared)


def _train(self: torch.fx.GraphModule, mode: bool = True) -> torch.fx.GraphModule:
    from torchao.quantization.pt2e import move_exported_model_to_eval, move_exported_model_to_train

    (move_exported_model_to_train if mode else move_exported_model_to_eval)(self)
    self.training = mode
    return self


def _eval(self: torch.fx.GraphModule) -> torch.fx.GraphModule:
    return _train(self, False)


def _train_eval(gm: torch.fx.GraphModule) -> None:
    """``.train()``/``.eval()`` of the exported graph switch batch-norm and dropout in the graph
    (torchao's ``move_exported_model_to_train/eval``) and return the module, as nn.Module's do
    (plain functions bound to the instance: a deepcopy rebinds them to the copy)."""
    gm.train = types.MethodType(_train, gm)  # type: ignore[method-assign]
    gm.eval = types.MethodType(_eval, gm)  # type: ignore[method-assign]


def calibrate(prepared: nn.Module, batches: Iterable[torch.Tensor]) -> int:
    """Run ``batches`` (already normalised as the network sees them) through the observers; returns the count."""
    n = 0
    prepared.eval()
    with torch.no_grad(), _torchao_chatter():
        for xb in batches:
            prepared(xb)
            n += int(xb.shape[0])
    return n


def freeze(prepared: nn.Module) -> nn.Module:
    """Fix every scale and zero point (observers off, fake quantization on); eval mode (batch-norm frozen)."""
    from torchao.quantization.pt2e import disable_observer, enable_fake_quant

    prepared.apply(disable_observer)
    prepared.apply(enable_fake_quant)
    return prepared.eval()


def _state_key(prepared: nn.Module, input_shape: tuple[int, ...]) -> str:
    h = hashlib.sha256(repr(tuple(input_shape)).encode())
    for name, t in sorted(prepared.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode() + repr(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _lower(reference: nn.Module, example: tuple[torch.Tensor, ...]) -> nn.Module:
    """torchao's x86 lowering (``lower_pt2e_quantized_to_x86``) with the batch dimension kept dynamic."""
    from torch._inductor.constant_folding import constant_fold
    from torch._inductor.fx_passes.freezing_patterns import freezing_passes

    import torchao.quantization.pt2e.inductor_passes.x86  # noqa: F401  (registers the int8 fusion passes)

    decomp = torch.export.default_decompositions()
    for op in list(decomp):
        if not torch._export.utils._is_cia_op(op):
            del decomp[op]
    lowered = _export(reference, example, strict=True).run_decompositions(decomp).module()
    graph = lowered.graph
    for node in list(graph.nodes):
        if node.target == torch.ops.aten.view.default:  # int8 conv outputs are channels-last: flatten must reshape
            node.target = torch.ops.aten.reshape.default
        elif node.target == torch.ops.aten.t.default:
            with graph.inserting_before(node):
                perm = graph.call_function(torch.ops.aten.permute.default, args=(node.args[0], [1, 0]))
            node.replace_all_uses_with(perm)
            graph.erase_node(node)
    lowered.recompile()
    freezing_passes(lowered, example)
    constant_fold(lowered)
    return tcast(nn.Module, lowered)


def to_integer(prepared: nn.Module, input_shape: tuple[int, ...] | None) -> nn.Module:
    """The integer model of a frozen surrogate: ``convert_pt2e`` on a copy, lowered to oneDNN int8
    kernels; cached per process by the frozen state's content."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    example = _example(input_shape)
    key = _state_key(prepared, tuple(example[0].shape[1:]))
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        return hit
    with torch.no_grad(), _torchao_chatter():
        reference = convert_pt2e(tcast(torch.fx.GraphModule, copy.deepcopy(prepared)))
        integer = _lower(reference, example)
    if not integer_ops(integer):
        raise CompressionError("PT2E lowering produced no int8 kernel (no quantizable conv/linear layer?); this model cannot be run as an integer model here.")
    _CACHE[key] = integer
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return integer


def integer_ops(integer: nn.Module) -> list[str]:
    """The int8 kernels a lowered model calls (one entry per call site, e.g. ``onednn.qconv_pointwise.default``)."""
    graph = getattr(integer, "graph", None)
    if graph is None:
        return []
    return [str(n.target) for n in graph.nodes if n.op == "call_function" and str(n.target).startswith(INTEGER_OPS)]


def integer_bytes(integer: nn.Module) -> int:
    """Bytes of the tensors a lowered model reads (packed int8 weights, biases, scales: its ``get_attr`` constants)."""
    graph = getattr(integer, "graph", None)
    total = 0
    for node in graph.nodes if graph is not None else []:
        if node.op != "get_attr":
            continue
        obj: Any = integer
        for part in str(node.target).split("."):
            obj = getattr(obj, part)
        if isinstance(obj, torch.Tensor):
            try:
                total += obj.numel() * obj.element_size()
            except RuntimeError:  # an opaque (oneDNN) tensor: count its elements
                total += obj.numel()
    return total


__all__ = ["INTEGER_OPS", "calibrate", "freeze", "integer_bytes", "integer_ops", "prepare_fake_quant", "require_torchao", "to_integer"]
