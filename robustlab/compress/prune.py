"""Pruning with ``torch.nn.utils.prune``: global L1 magnitude pruning (unstructured) and L2 channel
pruning of conv layers (structured), made permanent so the result is a plain state dict of the
base architecture.

A removed channel must be absent from what the next layer sees, as when the filter is cut out of
the network (Li et al. remove the filter, its feature map and the batch norm channel). A batch norm
after the conv would otherwise turn the zeroed channel into the constant ``beta - gamma * mean /
sqrt(var + eps)`` that the next layer keeps using, so the pruned network would be measured with a
channel a deployed, channel-cut one does not have. Structured pruning therefore also zeroes the
removed channels of the batch norm that normalises the conv's output (found by tracing the network
with ``torch.fx``): its weight, bias and running mean, so the channel is exactly zero after it, in
eval and in train mode.

References: Han et al., "Learning both Weights and Connections for Efficient Neural Networks",
NeurIPS 2015 (magnitude); Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017 (channel
norms). Checked against torch.nn.utils.prune (which does the pruning).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.utils import prune

from .methods import CompressionError


def _prunable(net: nn.Module, kinds: tuple[type[nn.Module], ...]) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in net.modules() if isinstance(m, kinds) and isinstance(getattr(m, "weight", None), torch.Tensor)]


def prune_unstructured(net: nn.Module, sparsity: float) -> nn.Module:
    """A copy of ``net`` whose ``sparsity`` fraction of all conv and linear weights (smallest |w|,
    ranked globally) are zero."""
    out = copy.deepcopy(net).cpu().float()
    params = _prunable(out, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear))
    if not params:
        raise CompressionError("the model has no conv or linear weights to prune.")
    prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=float(sparsity))
    for m, name in params:
        prune.remove(m, name)  # type: ignore[no-untyped-call]
    return out


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def conv_batch_norms(net: nn.Module) -> dict[nn.Module, _BatchNorm]:
    """Each conv whose output goes only to a batch norm, mapped to that batch norm (each called once,
    traced with ``torch.fx``; the norm's channels are the conv's output channels). Empty when the
    network does not trace."""
    try:
        gm = fx.symbolic_trace(net)
    except Exception:  # noqa: BLE001 - any tracing failure: no pairs are known
        return {}
    modules = dict(gm.named_modules())
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[str(node.target)] = calls.get(str(node.target), 0) + 1
    pairs: dict[nn.Module, _BatchNorm] = {}
    for node in gm.graph.nodes:
        src = node.args[0] if node.op == "call_module" and node.args else None
        bn = modules.get(str(node.target)) if node.op == "call_module" else None
        if not isinstance(bn, _BatchNorm) or not isinstance(src, fx.Node) or src.op != "call_module":
            continue
        conv = modules.get(str(src.target))
        if isinstance(conv, _CONVS) and len(src.users) == 1 and calls[str(node.target)] == 1 and calls[str(src.target)] == 1 \
                and bn.num_features == conv.out_channels:
            pairs[conv] = bn
    return pairs


def removed_channels(conv: nn.Module) -> torch.Tensor:
    """Bool per output channel of ``conv``: all its weights (and its bias) are zero."""
    w = getattr(conv, "weight")
    assert isinstance(w, torch.Tensor)
    gone = ~w.detach().flatten(1).any(dim=1)
    bias = getattr(conv, "bias", None)
    return gone & (bias.detach() == 0) if isinstance(bias, torch.Tensor) else gone


def _silence(bn: _BatchNorm, gone: torch.Tensor) -> None:
    with torch.no_grad():
        for t in (bn.weight, bn.bias, bn.running_mean):
            if isinstance(t, torch.Tensor):
                t[gone] = 0


def prune_structured(net: nn.Module, sparsity: float) -> nn.Module:
    """A copy of ``net`` with the ``sparsity`` fraction of output channels of every conv layer
    (smallest L2 norm) set to zero, biases of removed channels included, and those channels zeroed
    in the batch norm that follows the conv (see the module's docstring)."""
    out = copy.deepcopy(net).cpu().float()
    params = _prunable(out, _CONVS)
    if not params:
        raise CompressionError("structured pruning removes conv channels, and the model has no conv layer; use prune-unstructured.")
    norms = conv_batch_norms(out)
    for m, name in params:
        prune.ln_structured(m, name, amount=float(sparsity), n=2, dim=0)  # type: ignore[no-untyped-call]
        mask = getattr(m, name + "_mask")
        prune.remove(m, name)  # type: ignore[no-untyped-call]
        keep = mask.flatten(1).any(dim=1)
        bias = getattr(m, "bias", None)
        if isinstance(bias, torch.Tensor):
            with torch.no_grad():
                bias.mul_(keep.to(bias.dtype))
        if m in norms:
            _silence(norms[m], ~keep)
    return out


@contextmanager
def zeros_held(net: nn.Module, *, structured: bool) -> Iterator[nn.Module]:
    """Keep the pruned entries of ``net`` at exactly zero while it is trained inside the block.

    Every conv/linear weight is re-parametrised as ``weight_orig * mask`` (``mask`` = its nonzero
    entries now; :func:`torch.nn.utils.prune.custom_from_mask`), so the forward pass, and therefore
    the loss and its gradient, only ever sees zeros there whatever the optimizer does to
    ``weight_orig``. With ``structured`` the bias of every conv output channel whose weights are all
    zero is held at zero too, and so are that channel's weight and bias in the batch norm after the
    conv (a removed channel stays removed; its running mean follows the zero batch mean). On leaving,
    the masks are made permanent (``prune.remove``): ``net`` is again a plain module of the base
    architecture."""
    held: list[tuple[nn.Module, str]] = []
    norms = conv_batch_norms(net) if structured else {}
    for m, name in _prunable(net, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
        w = getattr(m, name)
        mask = (w != 0).to(w.dtype)
        gone = removed_channels(m) if structured and isinstance(m, _CONVS) else None
        prune.custom_from_mask(m, name, mask)  # type: ignore[no-untyped-call]
        held.append((m, name))
        if gone is None:
            continue
        bias = getattr(m, "bias", None)
        if isinstance(bias, torch.Tensor):
            prune.custom_from_mask(m, "bias", (~gone).to(bias.dtype))  # type: ignore[no-untyped-call]
            held.append((m, "bias"))
        bn = norms.get(m)
        if bn is not None and bn.affine and gone.any():
            _silence(bn, gone)
            for p in ("weight", "bias"):
                prune.custom_from_mask(bn, p, (~gone).to(getattr(bn, p).dtype))  # type: ignore[no-untyped-call]
                held.append((bn, p))
    try:
        yield net
    finally:
        for m, name in held:
            prune.remove(m, name)  # type: ignore[no-untyped-call]


def newly_zeroed(before: nn.Module, after: nn.Module) -> int:
    """How many conv and linear weights are zero in ``after`` (a pruned copy of ``before``) but not in
    ``before``: 0 when a sparsity too small to remove one weight or channel of any layer was asked."""
    kinds = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
    count = 0
    for (b, _), (a, _) in zip(_prunable(before, kinds), _prunable(after, kinds)):
        wb, wa = getattr(b, "weight"), getattr(a, "weight")
        assert isinstance(wb, torch.Tensor) and isinstance(wa, torch.Tensor)
        count += int(torch.logical_and(wa == 0, wb != 0).sum())
    return count


def sparsity(net: nn.Module) -> float:
    """Fraction of exactly-zero entries among the weights of conv and linear layers (float nets only)."""
    total = zeros = 0
    for m, _ in _prunable(net, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
        w = m.weight
        if isinstance(w, torch.Tensor) and w.is_floating_point():
            total += w.numel()
            zeros += int((w == 0).sum())
    return zeros / total if total else 0.0


__all__ = ["conv_batch_norms", "newly_zeroed", "prune_structured", "prune_unstructured", "removed_channels", "sparsity", "zeros_held"]
