"""Square Attack's margins through :class:`~robustlab.attacks.local_forward.LocalForward` where that saves work."""

from __future__ import annotations

import logging
from typing import Callable

import torch
from torch import fx, nn

from .local_forward import LocalForward

log = logging.getLogger(__name__)

__all__ = ["LocalMargins", "local_forward_for", "margins_of"]


class LocalMargins:
    """Square Attack's margins through :class:`LocalForward` where that saves work, for the points still
    attacked (row ``i`` of the cache is active point ``i``).

    :meth:`margins` returns None where the plain forward pass should be used: no traceable network, not a
    CPU, a square covering more than 1/16 of the image, a saving under ``MIN_SAVING`` of the multiply-adds,
    or a cache over ``CACHE_BYTES``. After a step that used the plain pass, an accepted candidate makes the
    cache stale; it is rebuilt from the current bests on the next local step. The first local step and every
    ``CHECK_EVERY``-th are also run on the model: logits that disagree by more than rounding (1e-4 of their
    scale) drop the local path for the run, and the margins' rounding goes to ``observe`` (Square's tie
    width, which must cover it).
    """

    #: the smallest fraction of the convolutions' multiply-adds the local path must save
    MIN_SAVING = 0.35
    #: the most memory the cached maps may take (a CIFAR ResNet-18 caches 5.4 MB per point, an ImageNet ResNet-50 101 MB)
    CACHE_BYTES = 1024 * 2**20

    #: every this many local steps (the first included), the margins are also computed by the model itself
    CHECK_EVERY = 32

    def __init__(self, model: nn.Module, device: torch.device, observe: Callable[[torch.Tensor], None] | None = None) -> None:
        self.model = model
        self.observe = observe  # takes relative margin roundings (local against the model's own pass)
        self.lf = local_forward_for(model) if device.type == "cpu" else None
        self.ready = False
        self.used = False  # whether the last step's margins came from here
        self.calls = 0

    @torch.no_grad()
    def margins(self, points: torch.Tensor, size: torch.Tensor, top: torch.Tensor, left: torch.Tensor, x_new: torch.Tensor, y: torch.Tensor,
                x_best: torch.Tensor, scale: torch.Tensor) -> torch.Tensor | None:
        """Margins (B,) of candidates ``x_new`` (B, C, H, W), which differ from ``x_best[points]`` only on
        their squares (``size``, ``top``, ``left``; (B,)), or None (use the plain forward pass). ``scale`` (B,):
        what a margin's rounding is measured against (1 + |best margin|), for ``observe``."""
        self.used = False
        lf = self.lf
        if lf is None or not x_new.shape[0]:
            return None
        h, w = x_new.shape[-2:]
        s = int(size.max())
        if 16 * s * s > h * w or lf.known_saving(s) < self.MIN_SAVING:
            return None
        if not self.ready:
            if lf.base and lf.cache_bytes() * x_best.shape[0] > self.CACHE_BYTES:
                return None
            lf.set_base(x_best)
            self.ready = True
            if lf.cache_bytes() * x_best.shape[0] > self.CACHE_BYTES:
                self.ready = False
                return None
        if lf.saving(s) < self.MIN_SAVING:
            return None
        t = torch.clamp(top, max=h - s).tolist()
        l_ = torch.clamp(left, max=w - s).tolist()
        crop = torch.stack([x_new[i, :, a : a + s, b : b + s] for i, (a, b) in enumerate(zip(t, l_))])
        logits = lf.logits(points, t, l_, crop)
        m = margins_of(logits, y)
        if self.calls % self.CHECK_EVERY == 0:  # against the model itself: its rounding, and a network read wrong
            from ..models.fold import logits_agree  # here: the models package imports far more than the attack layer may

            full = self.model(x_new)
            if not logits_agree(full, logits):
                log.warning("square: the local evaluation of the network disagrees with the model; every candidate uses the full forward pass")
                self.lf, self.ready = None, False
                return None
            if self.observe is not None:
                self.observe((m - margins_of(full, y)).abs() / scale)
        self.calls += 1
        self.used = True
        return m

    def accepted(self, rows: list[int]) -> None:
        """Rows ``rows`` of the last step's candidates became their points' bests."""
        if not self.ready or not rows:
            return
        if self.used and self.lf is not None:
            self.lf.accept(rows)
        else:
            self.ready = False

    def keep(self, idx: torch.Tensor) -> None:
        """Only the active points ``idx`` (indices into the current ones) remain."""
        if self.ready and self.lf is not None:
            self.lf.keep(idx)


def margins_of(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Square's margin (N,): the logit of ``y`` minus the largest other, from logits (N, K)."""
    u = torch.arange(logits.shape[0], device=logits.device)
    others = logits.clone()
    others[u, y] = -float("inf")
    return logits[u, y] - others.max(dim=-1)[0]


def local_forward_for(model: nn.Module) -> LocalForward | None:
    """A :class:`LocalForward` of ``model`` (a :class:`~robustlab.models.wrapper.RobustModel`, its
    batch-norm-folded view, either presented on [0, 1]), or None when its network does not trace."""
    from ..fastpaths import FoldedView
    from ..models.fold import hooked_module
    from ..models.wrapper import RobustModel
    from .unit_box import UnitBox

    lo, hi = 0.0, 1.0
    inner = model
    if isinstance(inner, UnitBox):
        lo, hi, inner = inner.lo, inner.hi, inner.model
    if isinstance(inner, FoldedView):
        inner = inner.model if inner.fell_back else inner._fast
    if not isinstance(inner, RobustModel) or getattr(inner, "_input_dtype", None) is not None or inner.net.training:
        return None
    if any(getattr(type(inner), f) is not getattr(RobustModel, f) for f in ("forward", "_forward", "normalise", "_logits")):
        return None  # a plugin's own forward: its network alone is not the model
    net = inner.net
    hooked = hooked_module(net)
    if hooked is not None:  # a crop computed by F.conv2d would skip them
        log.debug("no local evaluation: module %s of the network has hooks", hooked)
        return None
    if not isinstance(net, fx.GraphModule):
        try:
            net = fx.symbolic_trace(net)
        except Exception as exc:  # noqa: BLE001 - any tracing failure means: evaluate the network as it is
            log.debug("no local evaluation: the network does not trace (%s: %s)", type(exc).__name__, exc)
            return None
    rm = inner

    def pre(x: torch.Tensor) -> torch.Tensor:
        return rm.normalise(x if (lo, hi) == (0.0, 1.0) else lo + (hi - lo) * x)

    try:
        return LocalForward(net, pre, rm._logits)
    except ValueError as exc:
        log.debug("no local evaluation: %s", exc)
        return None

