"""Logits of images that differ from a cached one only inside a small box (Square Attack's late queries).

Square Attack's candidates change a square of a few pixels of their point's current best. Through a
convolutional network the change spreads only as far as the kernels reach: after the first convolutions
of a CIFAR ResNet-18 it still covers a small part of each map, and only deeper layers need the whole map.
:class:`LocalForward` (built by :func:`robustlab.attacks.square_local.local_forward_for`) keeps, for each
point, the value of every node of the network's ``torch.fx`` graph on the point's current best, and for a
candidate recomputes each convolution, max-pool, pointwise activation, eval-mode batch norm and sum only on
the box the change can reach (read from the cached maps, with the candidate's changed box pasted in);
the first node whose box would cover more than ``MAX_AREA`` of its map, or an operation it does not know,
gets the full maps (cached map plus box) and the rest of the graph runs as usual. The arithmetic is the
network's own; only the accumulation order of the convolutions differs (a crop instead of the whole map),
which moves a logit by float rounding, as a different batch size does.

Used by :func:`robustlab.attacks.square.square_linf`, whose decisions near a tie are taken on the full
network with the row alone, so its results do not depend on which path evaluated a candidate.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Callable, cast

import torch
import torch.nn.functional as F
from torch import fx, nn

__all__ = ["LocalForward"]

#: pointwise activations (modules and functions): evaluated on a box as on the whole map, always out of place
_POINTWISE_MODULES = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.LeakyReLU, nn.ELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.GELU, nn.Sigmoid, nn.Tanh, nn.Mish)
_POINTWISE_FUNCS = (F.relu, torch.relu, F.relu6, F.hardtanh, F.leaky_relu, F.elu, F.silu, F.hardswish, F.hardsigmoid, F.gelu, torch.sigmoid,
                    torch.tanh, F.mish)
_ADD_FUNCS = (operator.add, torch.add)
_IN_PLACE_OPERATORS = (operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ipow, operator.iand, operator.ior)


@dataclass
class _Box:
    """A node's value for a batch of rows: the cached map of each row's point, except on a box of common
    size (``bh``, ``bw``) at each row's origin (``top``, ``left``; (B,) long, possibly partly outside the map),
    whose values are ``crop`` (B, C, bh, bw). Values of ``crop`` outside the map mean nothing."""

    top: torch.Tensor
    left: torch.Tensor
    bh: int
    bw: int
    crop: torch.Tensor


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _conv_ok(m: nn.Module) -> bool:
    return (type(m) is nn.Conv2d and m.padding_mode == "zeros" and not isinstance(m.padding, str) and tuple(m.dilation) == (1, 1))


_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def _pointwise_node(n: fx.Node, mods: dict[str, nn.Module]) -> bool:
    """A pointwise activation of one input node (its other arguments constants)."""
    if len(n.all_input_nodes) != 1 or n.args[:1] != (n.all_input_nodes[0],):
        return False
    if n.op == "call_function":
        return n.target in _POINTWISE_FUNCS
    if n.op == "call_method":
        return n.target in ("relu", "sigmoid", "tanh")
    return n.op == "call_module" and type(mods.get(str(n.target))) in _POINTWISE_MODULES


def _in_place(n: fx.Node, mods: dict[str, nn.Module]) -> bool:
    """Whether node ``n`` may write into its input (pointwise activations excepted: evaluated out of place here)."""
    if _pointwise_node(n, mods):
        return False
    if n.kwargs.get("inplace") is True or (n.op == "call_method" and str(n.target).endswith("_") and not str(n.target).endswith("__")):
        return True
    if n.op == "call_function" and (n.target in _IN_PLACE_OPERATORS or str(getattr(n.target, "__name__", "")).endswith("_")):
        return True
    m = mods.get(str(n.target)) if n.op == "call_module" else None
    if isinstance(m, _DROPOUTS) and not m.training:  # the identity in eval mode, whatever its flag
        return False
    return m is not None and getattr(m, "inplace", False) is True


def _add_node(n: fx.Node) -> bool:
    return n.op == "call_function" and n.target in _ADD_FUNCS and len(n.args) == 2 and not n.kwargs


class LocalForward:
    """Logits of the rows ``base[point] with box replaced``, recomputing only where the box reaches.

    ``net`` is an ``fx.GraphModule`` of one input (N, C, H, W); ``pre`` maps raw inputs to the network's
    input elementwise per channel (normalisation), ``post`` maps the network's output to logits.
    :meth:`set_base` caches the nodes' values on the points' current bests, :meth:`logits` evaluates
    candidates, :meth:`accept` makes a candidate of the last call its point's new best.
    """

    #: a node is recomputed on its box while the box covers at most this fraction of its map
    MAX_AREA = 0.5

    def __init__(self, net: fx.GraphModule, pre: Callable[[torch.Tensor], torch.Tensor], post: Callable[[Any], torch.Tensor]) -> None:
        self.net, self.pre, self.post = net, pre, post
        self.mods = dict(net.named_modules())
        self.nodes = list(net.graph.nodes)
        holders = [n for n in self.nodes if n.op == "placeholder"]
        if len(holders) != 1:
            raise ValueError("the network takes more than one input")
        if any(_in_place(n, self.mods) for n in self.nodes):
            raise ValueError("the network has an in-place operation")
        self.input = holders[0]
        dep: set[fx.Node] = {self.input}
        for n in self.nodes:
            if any(a in dep for a in n.all_input_nodes):
                dep.add(n)
        self.dep = dep  # nodes whose value depends on the input
        self.base: dict[fx.Node, torch.Tensor] = {}
        self.padded: dict[tuple[fx.Node, float], tuple[torch.Tensor, int]] = {}
        self.last: dict[fx.Node, Any] = {}
        self.last_points: list[int] = []
        self._saving: dict[int, float] = {}
        self.raw0: torch.Tensor | None = None

    # -- plain evaluation --------------------------------------------------------------------
    def _call(self, n: fx.Node, env: dict[fx.Node, Any]) -> Any:
        args = fx.node.map_arg(n.args, lambda a: env[a])
        kwargs = fx.node.map_arg(n.kwargs, lambda a: env[a])
        if _pointwise_node(n, self.mods):  # out of place, whatever the network asked: cached maps are never overwritten
            if n.op == "call_module":
                m = self.mods[str(n.target)]
                return m(cast(torch.Tensor, args[0]).clone()) if getattr(m, "inplace", False) else m(*args, **kwargs)
            if "inplace" in kwargs:
                kwargs = {**kwargs, "inplace": False}
            elif n.target in (F.relu, F.relu6, F.silu, F.hardswish, F.hardsigmoid, F.mish) and len(args) == 2:
                args = args[:1]  # positional inplace flag
            elif n.target in (F.hardtanh, F.leaky_relu, F.elu) and len(args) == 4 - (n.target is not F.hardtanh):
                args = args[:-1]
        if n.op == "call_module":
            return self.mods[str(n.target)](*args, **kwargs)
        if n.op == "call_function":
            return cast(Callable[..., Any], n.target)(*args, **kwargs)
        if n.op == "call_method":
            return getattr(args[0], str(n.target))(*args[1:], **kwargs)
        if n.op == "get_attr":
            found: Any = self.net
            for part in str(n.target).split("."):
                found = getattr(found, part)
            return found
        raise ValueError(f"unexpected fx node {n.op}")

    @torch.no_grad()
    def set_base(self, x: torch.Tensor) -> torch.Tensor:
        """Cache every node's value on ``x`` (P, C, H, W) raw inputs (point p is row p); returns the logits."""
        self.padded, self.last, self.raw0 = {}, {}, x[:1].clone()
        env: dict[fx.Node, Any] = {self.input: self.pre(x)}
        out = self._run(env, {}, torch.zeros(0, dtype=torch.long))
        # copies: a node that is a view of another (a reshape) must not see the other's updates at its own coordinates
        self.base = {n: v.clone(memory_format=torch.contiguous_format) for n, v in env.items() if n in self.dep and isinstance(v, torch.Tensor) and v.ndim == 4}
        return out

    def _run(self, env: dict[fx.Node, Any], boxes: dict[fx.Node, _Box], pts: torch.Tensor) -> torch.Tensor:
        """Evaluate the graph: nodes that stay local get boxes, the others full values (local inputs of a node
        computed in full become full maps first); returns the logits."""
        for n in self.nodes:
            if n.op == "placeholder":
                continue
            if n.op == "output":
                src = n.args[0]
                if not isinstance(src, fx.Node) or src not in env:
                    raise ValueError("the network's output is not a single full tensor")
                return self.post(env[src])
            box = self._local(n, boxes, pts) if boxes and n in self.base else None
            if box is not None:
                boxes[n] = box
                continue
            for a in n.all_input_nodes:
                if a in boxes and a not in env:
                    env[a] = self._full(a, boxes[a], pts)
            env[n] = self._call(n, env)
        raise ValueError("the network has no output")

    def _margin_map(self, n: fx.Node, margin: int, fill: float = 0.0) -> tuple[torch.Tensor, int]:
        """The cached maps of ``n`` padded with ``fill`` by at least ``margin`` on every side, and that padding."""
        have = self.padded.get((n, fill))
        if have is None or have[1] < margin:
            m = max(margin, have[1] * 2 if have is not None else 4)
            have = (F.pad(self.base[n], (m, m, m, m), value=fill), m)
            self.padded[(n, fill)] = have
        return have

    def cache_bytes(self) -> int:
        """Bytes the cache holds per point."""
        rows = next(iter(self.base.values())).shape[0] if self.base else 1
        return sum(v.numel() * v.element_size() for v in self.base.values()) // max(rows, 1)

    # -- local evaluation -------------------------------------------------------------------
    def _gather(self, n: fx.Node, pts: torch.Tensor, top: torch.Tensor, left: torch.Tensor, h: int, w: int, fill: float) -> torch.Tensor:
        """(B, C, h, w): the cached maps of node ``n`` of points ``pts`` on boxes at (top, left), ``fill`` outside the map."""
        H, W = self.base[n].shape[-2:]
        tl, ll = top.tolist(), left.tolist()
        need = max(0, -min(tl), -min(ll), max(tl) + h - H, max(ll) + w - W)
        src, m = self._margin_map(n, need, fill)
        return torch.stack([src[p, :, t + m : t + m + h, l + m : l + m + w] for p, t, l in zip(pts.tolist(), tl, ll)])

    @staticmethod
    def _paste(out: torch.Tensor, top: torch.Tensor, left: torch.Tensor, b: _Box) -> None:
        """Write ``b``'s crops into ``out`` (B, C, h, w), whose boxes are at (top, left), where they overlap;
        rows with the same offsets are written together."""
        h, w = out.shape[-2:]
        dt, dl = (b.top - top).tolist(), (b.left - left).tolist()
        groups: dict[tuple[int, int], list[int]] = {}
        for i, key in enumerate(zip(dt, dl)):
            groups.setdefault(key, []).append(i)
        for (t, l), rows in groups.items():
            r0, r1, c0, c1 = max(0, t), min(h, t + b.bh), max(0, l), min(w, l + b.bw)
            if r0 >= r1 or c0 >= c1:
                continue
            src = b.crop[:, :, r0 - t : r1 - t, c0 - l : c1 - l]
            if len(rows) == out.shape[0]:
                out[:, :, r0:r1, c0:c1] = src
            else:
                idx = torch.tensor(rows, device=out.device)
                out[idx, :, r0:r1, c0:c1] = src[idx]

    def _values(self, n: fx.Node, b: _Box, pts: torch.Tensor, top: torch.Tensor, left: torch.Tensor, h: int, w: int, fill: float = 0.0) -> torch.Tensor:
        """Node ``n``'s values (value ``b``) on boxes of size (h, w) at (top, left), ``fill`` outside its map."""
        out = self._gather(n, pts, top, left, h, w, fill)
        self._paste(out, top, left, self._masked(n, b, fill))
        return out

    def _masked(self, n: fx.Node, b: _Box, fill: float) -> _Box:
        """``b`` with its values outside the map set to ``fill`` (a convolution's or a pooling's padding)."""
        H, W = self.base[n].shape[-2:]
        t, l = b.top, b.left
        if int(t.min()) >= 0 and int(l.min()) >= 0 and int(t.max()) + b.bh <= H and int(l.max()) + b.bw <= W:
            return b
        r = torch.arange(b.bh, device=t.device).view(1, -1) + t.view(-1, 1)
        c = torch.arange(b.bw, device=t.device).view(1, -1) + l.view(-1, 1)
        inside = ((r >= 0) & (r < H)).view(-1, 1, b.bh, 1) & ((c >= 0) & (c < W)).view(-1, 1, 1, b.bw)
        return _Box(t, l, b.bh, b.bw, torch.where(inside, b.crop, torch.full_like(b.crop[:1, :1, :1, :1], fill)))

    def _full(self, n: fx.Node, b: _Box, pts: torch.Tensor) -> torch.Tensor:
        full = self.base[n][pts]
        H, W = full.shape[-2:]
        for i, (t, l) in enumerate(zip(b.top.tolist(), b.left.tolist())):
            r0, r1, c0, c1 = max(0, t), min(H, t + b.bh), max(0, l), min(W, l + b.bw)
            if r0 < r1 and c0 < c1:
                full[i, :, r0:r1, c0:c1] = b.crop[i, :, r0 - t : r1 - t, c0 - l : c1 - l]
        return full

    def _window(self, n: fx.Node, b: _Box, pts: torch.Tensor, k: tuple[int, int], st: tuple[int, int], pad: tuple[int, int], fill: float,
                op: Callable[[torch.Tensor], torch.Tensor]) -> _Box | None:
        """A sliding-window node (kernel ``k``, stride ``st``, padding ``pad`` filled with ``fill``) on the box its input's box reaches:
        ``op`` applied without padding to the input's values on that box and its halo."""
        src = n.args[0]
        assert isinstance(src, fx.Node)
        ho, wo = self.base[n].shape[-2:]
        (kh, kw), (sh, sw), (ph, pw) = k, st, pad
        bh, bw = (b.bh + kh - 2) // sh + 1, (b.bw + kw - 2) // sw + 1
        if bh * bw > self.MAX_AREA * ho * wo:
            return None
        top = -torch.div(kh - 1 - ph - b.top, sh, rounding_mode="floor")  # first output the box reaches
        left = -torch.div(kw - 1 - pw - b.left, sw, rounding_mode="floor")
        patch = self._values(src, b, pts, top * sh - ph, left * sw - pw, (bh - 1) * sh + kh, (bw - 1) * sw + kw, fill)
        return _Box(top, left, bh, bw, op(patch))

    def _add(self, n: fx.Node, a: fx.Node, b: _Box, c: fx.Node, d: _Box, pts: torch.Tensor) -> _Box | None:
        h, w = self.base[n].shape[-2:]
        top, left = torch.minimum(b.top, d.top), torch.minimum(b.left, d.left)
        bh = int((torch.maximum(b.top + b.bh, d.top + d.bh) - top).max())
        bw = int((torch.maximum(b.left + b.bw, d.left + d.bw) - left).max())
        if bh * bw > self.MAX_AREA * h * w:
            return None
        def on_union(node: fx.Node, box: _Box) -> torch.Tensor:
            if box.bh == bh and box.bw == bw and bool((box.top == top).all()) and bool((box.left == left).all()):
                return box.crop
            return self._values(node, box, pts, top, left, bh, bw)

        return _Box(top, left, bh, bw, on_union(a, b) + on_union(c, d))

    def known_saving(self, size: int) -> float:
        """:meth:`saving` for ``size`` if measured, else 1."""
        return self._saving.get(size, 1.0)

    @torch.no_grad()
    def saving(self, size: int) -> float:
        """The fraction of the convolutions' multiply-adds a candidate changing a ``size`` x ``size`` box at
        the centre of the image saves (0 when none is local); measured once per size on the first cached
        point (forgets the last call's values)."""
        if size in self._saving:
            return self._saving[size]
        x0 = self.base.get(self.input)
        saved = 0.0
        if x0 is not None and x0.ndim == 4 and size <= min(x0.shape[-2:]):
            h, w = x0.shape[-2:]
            t, l = (h - size) // 2, (w - size) // 2
            crop = self.raw0[:1, :, t : t + size, l : l + size] if self.raw0 is not None else None
            if crop is not None:
                self.logits(torch.zeros(1, dtype=torch.long), [t], [l], crop)
                done = total = 0
                for n in self.nodes:
                    m = self.mods.get(str(n.target)) if n.op == "call_module" else None
                    if isinstance(m, nn.Conv2d) and n in self.base and n in self.last:
                        per = m.in_channels // m.groups * m.out_channels * m.kernel_size[0] * m.kernel_size[1]
                        ho, wo = self.base[n].shape[-2:]
                        v = self.last.get(n)
                        total += per * ho * wo
                        done += per * (v.bh * v.bw if isinstance(v, _Box) else ho * wo)
                saved = 1.0 - done / total if total else 0.0
                self.last = {}
        self._saving[size] = saved
        return saved

    @torch.no_grad()
    def logits(self, points: torch.Tensor, top: list[int], left: list[int], crop: torch.Tensor) -> torch.Tensor:
        """Logits (B, K) of rows ``b``: point ``points[b]``'s cached best with the box of ``crop[b]`` (C, s, s raw
        values) at (``top[b]``, ``left[b]``). The values of the nodes are kept for :meth:`accept`."""
        pts = points.to(torch.long)
        dev = crop.device
        boxes = {self.input: _Box(torch.as_tensor(top, device=dev), torch.as_tensor(left, device=dev), crop.shape[-2], crop.shape[-1], self.pre(crop))}
        env: dict[fx.Node, Any] = {}
        out = self._run(env, boxes, pts)
        self.last = {**boxes, **{k: v for k, v in env.items() if k in self.base}}
        self.last_points = pts.tolist()
        return out

    def _local(self, n: fx.Node, boxes: dict[fx.Node, _Box], pts: torch.Tensor) -> _Box | None:
        ins = n.all_input_nodes
        if _pointwise_node(n, self.mods):
            if ins[0] not in boxes:
                return None
            b = boxes[ins[0]]
            return _Box(b.top, b.left, b.bh, b.bw, self._call(n, {ins[0]: b.crop}))
        if _add_node(n):
            a, c = n.args
            if isinstance(a, fx.Node) and isinstance(c, fx.Node) and a in boxes and c in boxes:
                return self._add(n, a, boxes[a], c, boxes[c], pts)
            return None
        if n.op == "call_module" and len(n.args) == 1 and not n.kwargs and ins and ins[0] in boxes:
            m = self.mods[str(n.target)]
            b = boxes[ins[0]]
            if _conv_ok(m):
                assert isinstance(m, nn.Conv2d)
                cv = m
                return self._window(n, b, pts, _pair(cv.kernel_size), _pair(cv.stride), _pair(cv.padding), 0.0,
                                    lambda p: F.conv2d(p, cv.weight, cv.bias, cv.stride, 0, 1, cv.groups))
            if type(m) is nn.MaxPool2d and not m.ceil_mode and not m.return_indices and _pair(m.dilation) == (1, 1):
                mp = m
                return self._window(n, b, pts, _pair(mp.kernel_size), _pair(mp.stride), _pair(mp.padding), -math.inf,
                                    lambda p: F.max_pool2d(p, mp.kernel_size, mp.stride, 0))
            if type(m) is nn.BatchNorm2d and not m.training and m.running_mean is not None:  # per channel: elementwise
                return _Box(b.top, b.left, b.bh, b.bw, F.batch_norm(b.crop, m.running_mean, m.running_var, m.weight, m.bias, False, 0.0, m.eps))
        return None

    @torch.no_grad()
    def accept(self, rows: list[int]) -> None:
        """Row ``rows[i]`` of the last :meth:`logits` call becomes the cached best of its point."""
        for r in rows:
            p = self.last_points[r]
            for n, v in self.last.items():
                if n not in self.base:
                    continue
                H, W = self.base[n].shape[-2:]
                pads = [pv for (pn, _), pv in self.padded.items() if pn is n]
                if isinstance(v, _Box):
                    t, l = int(v.top[r]), int(v.left[r])
                    r0, r1, c0, c1 = max(0, t), min(H, t + v.bh), max(0, l), min(W, l + v.bw)
                    if r0 >= r1 or c0 >= c1:
                        continue
                    val = v.crop[r, :, r0 - t : r1 - t, c0 - l : c1 - l]
                else:
                    r0, r1, c0, c1, val = 0, H, 0, W, v[r]
                self.base[n][p, :, r0:r1, c0:c1] = val
                for src, m in pads:
                    src[p, :, r0 + m : r1 + m, c0 + m : c1 + m] = val

    def keep(self, points: torch.Tensor) -> None:
        """Keep only the cached points ``points`` (in that order)."""
        idx = points.to(torch.long)
        self.base = {n: v[idx].contiguous() for n, v in self.base.items()}
        self.padded, self.last = {}, {}

