"""Penultimate features of a ``torch.export`` model: a hookable stand-in for its last linear op.

``torch.export.load(...).module()`` is a graph of ATen calls: its layers are attributes that are never
called as modules, so neither the default penultimate-feature lookup (the input of the last
``nn.Linear``) nor a forward hook on a named layer sees anything. :func:`tap_last_linear` replaces the
graph's last ``aten.linear`` call by a call of :class:`GraphLinear`, an ``nn.Linear`` that computes the
same ``F.linear(x, w, b)`` with the graph's own weight, so the lookup finds it and its hook receives
the features. The function the graph computes is unchanged.

References: ``robustlab/compress/pt2e.py`` taps int8 surrogate graphs the same way.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch
from torch import fx, nn

log = logging.getLogger(__name__)

__all__ = ["GraphLinear", "prepare_exported", "tap_last_linear", "training_mode_ops"]

#: ATen ops whose argument at the given position says "training mode" (batch statistics, random dropout)
_TRAINING_ARG = {"dropout": 2, "feature_dropout": 2, "alpha_dropout": 2, "feature_alpha_dropout": 2, "batch_norm": 5}


class GraphLinear(nn.Linear):
    """The last linear op of an exported graph as a module: ``forward(x, w, b) = F.linear(x, w, b)``.

    ``weight`` and ``bias`` are the graph's own tensors, held as plain attributes (they stay registered
    once, where the graph keeps them), so ViM can read the head."""

    def __init__(self, weight: torch.Tensor | None, bias: torch.Tensor | None) -> None:
        nn.Module.__init__(self)
        object.__setattr__(self, "weight", weight)
        object.__setattr__(self, "bias", bias)
        self.out_features, self.in_features = (int(weight.shape[0]), int(weight.shape[1])) if weight is not None and weight.ndim == 2 else (0, 0)

    def forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        return torch.nn.functional.linear(x, weight, bias)


def _attr(gm: fx.GraphModule, node: Any) -> torch.Tensor | None:
    """The tensor a ``get_attr`` node reads (a dotted path such as ``fc.weight``), else None."""
    if not isinstance(node, fx.Node) or node.op != "get_attr":
        return None
    value: Any = gm
    for part in str(node.target).split("."):
        value = getattr(value, part, None)
    return value if isinstance(value, torch.Tensor) else None


def training_mode_ops(gm: nn.Module) -> list[str]:
    """Names of the ops of a ``torch.export`` graph that run in training mode (``aten.dropout`` with
    ``train=True``, ``aten.batch_norm`` with ``training=True``, ...): a model exported before ``.eval()``.
    Its exported graph keeps them, since ``.eval()`` cannot be called on it."""
    if not isinstance(gm, fx.GraphModule):
        return []
    found = []
    for n in gm.graph.nodes:
        name = getattr(getattr(n.target, "_schema", None), "name", "").removeprefix("aten::") if n.op == "call_function" else ""
        pos = _TRAINING_ARG.get(name)
        if pos is not None and len(n.args) > pos and n.args[pos] is True:
            found.append(f"aten.{name}")
    return found


def prepare_exported(gm: nn.Module, source: str) -> nn.Module:
    """A loaded ``torch.export`` module made ready for evaluation: a warning when it runs ops in training
    mode (:func:`training_mode_ops`; usually exported before ``.eval()``, which cannot be undone on the
    graph), and its last linear op tapped (:func:`tap_last_linear`)."""
    ops = sorted(set(training_mode_ops(gm)))
    if ops:
        log.warning("%s runs %s in training mode (exported before model.eval()?): its outputs depend on chance and on the rest of the batch, "
                    "which the audits report; unless that is intended (MC dropout, batch norm without running statistics), call model.eval() before torch.export.export and save it again.",
                    source, " and ".join(ops))
    tap_last_linear(gm)
    return gm


def tap_last_linear(gm: nn.Module) -> bool:
    """Route the last ``aten.linear`` call of ``gm`` (a graph module from ``torch.export``) through a
    :class:`GraphLinear` submodule named ``feature_tap``; False (and ``gm`` unchanged) when it is not
    such a graph or has no linear op."""
    if not isinstance(gm, fx.GraphModule) or hasattr(gm, "feature_tap"):
        return False

    def head(node: fx.Node) -> nn.Module:
        args = list(node.args) + [None] * (3 - len(node.args))
        return GraphLinear(_attr(gm, args[1]), _attr(gm, args[2]))

    name = reroute_last_linear(gm, head)
    if name is None:
        return False
    log.debug("torch.export model: penultimate features are the input of its last linear op %s", name)
    return True


def reroute_last_linear(gm: fx.GraphModule, make: Callable[[fx.Node], nn.Module]) -> str | None:
    """Replace the last ``aten.linear`` call of ``gm`` by a call of the submodule ``feature_tap`` that
    ``make(node)`` builds (same arguments, so forward hooks on it see the penultimate features); the
    replaced node's name, or None when the graph has no linear op."""
    linears = [n for n in gm.graph.nodes if n.op == "call_function" and n.target == torch.ops.aten.linear.default]
    if not linears:
        return None
    node = linears[-1]
    gm.add_submodule("feature_tap", make(node))
    with gm.graph.inserting_before(node):
        tap = gm.graph.call_module("feature_tap", args=tuple(node.args), kwargs=dict(node.kwargs))
    tap.meta = dict(node.meta)
    node.replace_all_uses_with(tap)
    gm.graph.erase_node(node)
    gm.recompile()
    return str(node.name)
