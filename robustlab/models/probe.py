"""Probe forward passes: read a network's class count and classifier head from what it computes.

A network's registered layers can mislead: an unused ``nn.Linear`` registered after the head, or a
state dict whose keys come sorted by name (safetensors) so that ``fc1.weight`` follows ``fc.weight``.
What the network returns on a dummy batch cannot: its width is the number of classes, and the last
weight layer called whose output rows match that width is the head.

The probe runs on a deep copy of the network (a model that counts its calls or keeps state must not
see it), under ``torch.no_grad`` in eval mode on a seeded dummy batch; it restores the global RNG
afterwards (a stochastic model must not shift a seeded run) and never raises: a model that cannot be
copied or fails on the dummy input gives ``None``, and the callers fall back to their layer
heuristics.

References: none (a robustlab heuristic; timm's ``get_classifier()`` names the head the same way for
timm models).
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from typing import Any, Iterator

import torch
from torch import nn

log = logging.getLogger(__name__)

#: image sizes tried, cheapest first, when the input shape is unknown (8: scikit-learn digits,
#: 28: MNIST, 32: CIFAR, 64/96: small ImageNet variants, 224: ImageNet)
SIZES = (8, 16, 28, 32, 64, 96, 224)
_BATCH = 2


def candidate_shapes(net: nn.Module, input_shape: tuple[int, ...] | None) -> list[tuple[int, ...]]:
    """Input shapes ``(C, H, W)`` to probe ``net`` with: the known one, else guesses from its first
    weight (a conv's input channels, or a linear layer's input width as C x H x H with C in 1, 3)."""
    if input_shape:
        return [tuple(int(s) for s in input_shape)]
    first = next((p for n, p in net.named_parameters() if n.endswith("weight") and p.ndim in (2, 4)), None)
    if first is None:
        return []
    if first.ndim == 4:  # Conv2d: (out, in / groups, kh, kw)
        return [(int(first.shape[1]), s, s) for s in SIZES]
    width = int(first.shape[1])  # Linear on flattened images
    out: list[tuple[int, ...]] = []
    for c in (1, 3):
        side = math.isqrt(width // c)
        if c * side * side == width:
            out.append((c, side, side))
    return out


def _param(net: nn.Module) -> torch.Tensor | None:
    return next(iter(net.parameters()), None)


def _forward(net: nn.Module, shape: tuple[int, ...], *, hooks: bool = False) -> tuple[torch.Tensor | None, list[str]]:
    """``net`` (a copy: this sets it to eval mode) on a seeded ``(2, *shape)`` batch in [0, 1]: (the
    output if it is a 2-D tensor, else None; names of the modules with a weight of 2+ dims, in the
    order they were called)."""
    p = _param(net)
    dtype = p.dtype if p is not None and p.dtype.is_floating_point else torch.float32
    device = p.device if p is not None else torch.device("cpu")
    x = torch.rand((_BATCH, *shape), generator=torch.Generator().manual_seed(0)).to(device=device, dtype=dtype)
    called: list[str] = []
    handles = []
    if hooks:
        for name, mod in net.named_modules():
            w = mod._parameters.get("weight") if isinstance(getattr(mod, "_parameters", None), dict) else None
            if isinstance(w, torch.Tensor) and w.ndim >= 2:
                handles.append(mod.register_forward_hook(_recorder(called, name)))
    devices = [device.index or 0] if device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                net.eval()
            except NotImplementedError:  # torch.export modules
                pass
            out = net(x)
    except Exception as exc:  # noqa: BLE001 - a user's model may raise anything on an input it was not made for
        log.debug("probe forward with input shape %s failed: %s", shape, exc)
        out = None
    finally:
        for h in handles:
            h.remove()
    ok = isinstance(out, torch.Tensor) and out.ndim == 2 and out.shape[0] == _BATCH and out.shape[1] >= 1
    return (out if ok else None), called


def _recorder(called: list[str], name: str) -> Any:
    def hook(_mod: nn.Module, _inp: Any, _out: Any) -> None:
        called.append(name)

    return hook


def _probes(net: nn.Module, input_shape: tuple[int, ...] | None, *, hooks: bool = False) -> Iterator[tuple[torch.Tensor, list[str]]]:
    shapes = candidate_shapes(net, input_shape)
    if not shapes:
        return
    try:
        twin = copy.deepcopy(net)
    except Exception as exc:  # noqa: BLE001 - any attribute of a user's model may refuse to be copied
        log.debug("probe forward skipped: the model cannot be copied (%s)", exc)
        return
    for shape in shapes:
        out, called = _forward(twin, shape, hooks=hooks)
        if out is not None:
            log.debug("probe forward: input shape %s -> output %s", shape, tuple(out.shape))
            yield out, called
            return


def output_width(net: nn.Module, input_shape: tuple[int, ...] | None) -> int | None:
    """Number of logits ``net`` returns for a dummy batch of ``input_shape`` (guessed when None), or
    None when no probe gives ``(N, K)`` logits."""
    for out, _ in _probes(net, input_shape):
        return int(out.shape[1])
    return None


def head_weight_name(net: nn.Module, input_shape: tuple[int, ...] | None) -> str | None:
    """State-dict key of the classifier head's weight: the last weight layer called in a probe forward
    whose output rows equal the logits' width (e.g. ``classifier.2.weight`` of torchvision's
    ConvNeXt), or None when the probe fails or no such layer is called."""
    for out, called in _probes(net, input_shape, hooks=True):
        mods = dict(net.named_modules())
        k = int(out.shape[1])
        for name in reversed(called):
            w = mods[name]._parameters.get("weight")
            if isinstance(w, torch.Tensor) and int(w.shape[0]) == k:
                return f"{name}.weight" if name else "weight"
    return None
