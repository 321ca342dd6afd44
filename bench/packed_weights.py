"""Benchmark: oneDNN convolutions with weights reordered once (pre-packed), against the attack view's own.

On a CPU every convolution call of PyTorch's eager mode reorders its weights into oneDNN's blocked layout
(ResNet-18: 44 MB per forward pass, again for the input gradient). This bench measures what skipping that
would give on the attack iterations: a copy of the batch-norm-folded network (the view `robustlab evaluate`
iterates on, channels-last from ``FoldedView.CHANNELS_LAST_ROWS`` rows) whose 2-D convolutions call
``torch.ops.mkldnn._convolution_pointwise`` with weights packed once per input shape, and whose input
gradient is the transposed convolution with its weights packed likewise (a custom autograd function).
Same process, interleaved repetitions. Prints one JSON line per (kind, rows): milliseconds per row each
way (median), their ratio, and the largest difference from the model's own logits or input gradient
(relative to their largest magnitude) of each side.

It is a measurement of an idea, not a fast path robustlab uses: the reorder it removes is a fixed cost per call, which
AutoAttack's members amortise over the 16-64 rows they run on this CPU (bench/results/packed_weights_*.jsonl).

Example:
    python bench/packed_weights.py --model ROBUST.safetensors
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
from typing import Any

import torch
from torch import nn

from common import add_cifar_args, cifar_points, forward_call, gradient_call, per_row_ms


class _PackedFn(torch.autograd.Function):
    """x -> conv(x) with packed weights; the input gradient by the packed transposed convolution."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, conv: "PackedConv2d") -> torch.Tensor:  # type: ignore[override]
        ctx.conv, ctx.in_hw = conv, tuple(x.shape[-2:])
        return conv.run(x)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return ctx.conv.input_grad(grad, ctx.in_hw), None


class PackedConv2d(nn.Module):
    """A zero-padded ``nn.Conv2d`` whose oneDNN weights are packed once per input shape."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv
        self.pad, self.stride, self.dil = list(conv.padding), list(conv.stride), list(conv.dilation)  # type: ignore[arg-type]
        self.fwd: dict[tuple[int, ...], torch.Tensor] = {}
        self.bwd: dict[tuple[int, ...], tuple[torch.Tensor, list[int]]] = {}

    def run(self, x: torch.Tensor) -> torch.Tensor:
        c, key = self.conv, tuple(x.shape)
        if key not in self.fwd:
            self.fwd[key] = torch.ops.mkldnn._reorder_convolution_weight(c.weight.detach(), self.pad, self.stride, self.dil, c.groups, list(key))
        bias = None if c.bias is None else c.bias.detach()
        return torch.ops.mkldnn._convolution_pointwise(x, self.fwd[key], bias, self.pad, self.stride, self.dil, c.groups, "none", [], "")

    def input_grad(self, g: torch.Tensor, in_hw: tuple[int, ...]) -> torch.Tensor:
        c, key = self.conv, tuple(g.shape)
        if key not in self.bwd:
            k = c.kernel_size
            opad = [in_hw[i] - ((g.shape[2 + i] - 1) * self.stride[i] - 2 * self.pad[i] + self.dil[i] * (k[i] - 1) + 1) for i in range(2)]
            w = torch.ops.mkldnn._reorder_convolution_transpose_weight(c.weight.detach(), self.pad, opad, self.stride, self.dil, c.groups, list(key))
            self.bwd[key] = (w, opad)
        w, opad = self.bwd[key]
        return torch.ops.mkldnn._convolution_transpose_pointwise(g, w, None, self.pad, opad, self.stride, self.dil, c.groups, "none", [], "")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return _PackedFn.apply(x, self)  # type: ignore[no-any-return]
        return self.run(x)


def packed_copy(net: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``net`` (parameters frozen) with every plain zero-padded ``nn.Conv2d`` packed; the count."""
    net = copy.deepcopy(net)
    for p in net.parameters():
        p.requires_grad_(False)
    count = 0
    for m in list(net.modules()):
        for name, child in list(m.named_children()):
            if type(child) is nn.Conv2d and child.padding_mode == "zeros" and isinstance(child.padding, tuple):
                setattr(m, name, PackedConv2d(child))
                count += 1
    return net, count


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_cifar_args(ap)
    ap.add_argument("--reps", type=int, default=4, help="interleaved repetitions per batch size")
    ap.add_argument("--quick", action="store_true", help="batches of 2 and 18 rows, one repetition (end-to-end test)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from robustlab.fastpaths import _with_net, folded_view

    points = cifar_points(args, "packed_weights")
    if points is None:
        return
    model, x, _, _ = points
    view = folded_view(model)
    if view is None:
        print(json.dumps({"task": "packed_weights", "model": args.model, "skipped": "no batch norm folds in this model"}))
        return
    net, count = packed_copy(view._fast.net)
    packed = _with_net(view._fast, net)
    n = x.shape[0]
    reps = 1 if args.quick else args.reps
    for b in ((2, 18) if args.quick else (2, 8, 16, 18, 27, 64)):
        xb = x[torch.arange(b) % n] + 0.01 * torch.rand(b, *x.shape[1:], generator=torch.Generator().manual_seed(b))
        xb = xb.clamp(0, 1)
        for kind, make in (("forward", forward_call), ("input_gradient", gradient_call)):
            want = make(model, xb)()
            diff = {name: _rel(make(m, xb)(), want) for name, m in (("view", view), ("packed", packed))}  # type: ignore[arg-type]
            cost: dict[str, list[float]] = {"view": [], "packed": []}
            for _ in range(reps):
                for name, m in (("view", view), ("packed", packed)):
                    cost[name].append(per_row_ms(make(m, xb), b, 1 if args.quick else 5))
            mv, mp = statistics.median(cost["view"]), statistics.median(cost["packed"])
            print(json.dumps({"task": "packed_weights/row_cost", "model": args.model, "kind": kind, "batch": b, "threads": args.threads,
                              "packed_convolutions": count, "view_ms_per_row": round(mv, 3), "packed_ms_per_row": round(mp, 3),
                              "ratio": round(mv / mp, 3), "view_max_rel_diff": diff["view"], "packed_max_rel_diff": diff["packed"]}), flush=True)


if __name__ == "__main__":
    main()
