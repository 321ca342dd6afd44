"""Pruning with ``torch.nn.utils.prune``: global L1 magnitude pruning (unstructured) and L2 channel
pruning of conv layers (structured), made permanent so the result is a plain state dict of the
base architecture.

References: Han et al., "Learning both Weights and Connections for Efficient Neural Networks",
NeurIPS 2015 (magnitude); Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017 (channel
norms). Checked against torch.nn.utils.prune (which does the pruning).
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn
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


def prune_structured(net: nn.Module, sparsity: float) -> nn.Module:
    """A copy of ``net`` with the ``sparsity`` fraction of output channels of every conv layer
    (smallest L2 norm) set to zero, biases of removed channels included."""
    out = copy.deepcopy(net).cpu().float()
    params = _prunable(out, (nn.Conv1d, nn.Conv2d, nn.Conv3d))
    if not params:
        raise CompressionError("structured pruning removes conv channels, and the model has no conv layer; use prune-unstructured.")
    for m, name in params:
        prune.ln_structured(m, name, amount=float(sparsity), n=2, dim=0)  # type: ignore[no-untyped-call]
        mask = getattr(m, name + "_mask")
        prune.remove(m, name)  # type: ignore[no-untyped-call]
        bias = getattr(m, "bias", None)
        if isinstance(bias, torch.Tensor):
            keep = mask.flatten(1).any(dim=1)
            with torch.no_grad():
                bias.mul_(keep.to(bias.dtype))
    return out


@contextmanager
def zeros_held(net: nn.Module, *, structured: bool) -> Iterator[nn.Module]:
    """Keep the pruned entries of ``net`` at exactly zero while it is trained inside the block.

    Every conv/linear weight is re-parametrised as ``weight_orig * mask`` (``mask`` = its nonzero
    entries now; :func:`torch.nn.utils.prune.custom_from_mask`), so the forward pass, and therefore
    the loss and its gradient, only ever sees zeros there whatever the optimizer does to
    ``weight_orig``. With ``structured`` the bias of every conv output channel whose weights are all
    zero is held at zero too (a removed channel stays removed). On leaving, the masks are made
    permanent (``prune.remove``): ``net`` is again a plain module of the base architecture."""
    held: list[tuple[nn.Module, str]] = []
    for m, name in _prunable(net, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
        w = getattr(m, name)
        mask = (w != 0).to(w.dtype)
        prune.custom_from_mask(m, name, mask)  # type: ignore[no-untyped-call]
        held.append((m, name))
        bias = getattr(m, "bias", None)
        if structured and isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and isinstance(bias, torch.Tensor):
            keep = mask.flatten(1).any(dim=1).to(bias.dtype)
            prune.custom_from_mask(m, "bias", keep)  # type: ignore[no-untyped-call]
            held.append((m, "bias"))
    try:
        yield net
    finally:
        for m, name in held:
            prune.remove(m, name)  # type: ignore[no-untyped-call]


def sparsity(net: nn.Module) -> float:
    """Fraction of exactly-zero entries among the weights of conv and linear layers (float nets only)."""
    total = zeros = 0
    for m, _ in _prunable(net, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
        w = m.weight
        if isinstance(w, torch.Tensor) and w.is_floating_point():
            total += w.numel()
            zeros += int((w == 0).sum())
    return zeros / total if total else 0.0


__all__ = ["prune_structured", "prune_unstructured", "sparsity", "zeros_held"]
