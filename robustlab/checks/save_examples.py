"""The adversarial checks' side of ``--save-adversarial``: write each batch's examples as one shard
(:mod:`robustlab.adversarial_examples`) while the batch is in memory, then index them.

Nothing is held across batches: a shard and its ``.sha256`` file are written inside the batch
function, before its compact result goes to the result store, so ``--resume`` finds a shard for
every stored batch; a shard that is missing anyway (deleted, or never written by a run that stopped
between the two) or has no recorded sha256 (a run killed between the shard and its hash) is
recomputed from the same per-sample seeds, which gives the same example. A shard that no longer
matches its recorded sha256 is never re-indexed: ``--resume`` refuses it before any check runs
(:func:`robustlab.adversarial_examples.check_index_for_resume`), and indexing it is an error.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    from pathlib import Path

    import torch

    from ..attacks.threat import Norm
    from .base import RunContext

log = logging.getLogger(__name__)

OPTION = "save_adversarial"


def saving(ctx: "RunContext") -> bool:
    """Whether the run asked for adversarial examples on disk (``--save-adversarial`` or the suite's
    ``save_adversarial: true``)."""
    return bool(ctx.options.get(OPTION))


class ExampleSaver:
    """Writes the shards of one check, one epsilon folder per budget (minimal-norm checks:
    :class:`MinimalSaver`)."""

    def __init__(self, ctx: "RunContext", *, check_id: str, check: str, norm: "Norm", epsilons: Sequence[float], sweep: bool = True) -> None:
        from ..adversarial_examples import root_of

        self.ctx, self.check_id, self.check, self.norm = ctx, check_id, check, norm
        self.epsilons, self.sweep = [float(e) for e in epsilons], sweep
        self.root = root_of(ctx.out_dir)

    def write(self, eps: float, start: int, stop: int, x: "torch.Tensor", y: "torch.Tensor", x_adv: "torch.Tensor", *, correct: Sequence[bool], success: Sequence[bool]) -> None:
        """Write the batch ``[start, stop)``: ``x_adv`` exactly as evaluated, with the fp32 model's
        prediction on it and ``||x_adv - x||``."""
        import torch

        from ..adversarial_examples import eps_dir, shard_path, write_shard
        from ..attacks.geometry import norms

        ctx = self.ctx
        with torch.no_grad():
            pred = ctx.model(x_adv.to(ctx.device)).argmax(1)
        nrm = norms((x_adv.to(x.device) - x).float(), self.norm)
        write_shard(shard_path(eps_dir(self.root, self.check_id, eps), start, stop), ids=ctx.data.ids[start:stop], y=y.cpu().numpy(),
                    x_adv=x_adv.detach().cpu().numpy(), pred=pred.cpu().numpy(), correct=list(correct), success=list(success), norm=nrm.cpu().numpy())

    def finish(self, eps: float, n: int, batch: Callable[[int, int], Any]) -> None:
        """After the batches of ``eps``: recompute any batch whose shard is missing or has no recorded
        sha256, then index them with their recorded hashes, verified (on the main rank; the others
        wrote their shards before the results were exchanged)."""
        from ..adversarial_examples import eps_dir, record_epsilon

        if not self.ctx.dist.is_main:
            return
        _redo(self.ctx, self.root, eps_dir(self.root, self.check_id, eps), n, batch, self.check_id)
        entry = record_epsilon(self.root, check_id=self.check_id, check=self.check, norm=self.norm.value, eps=eps, epsilons=self.epsilons, n=n, sweep=self.sweep)
        log.info("%s eps %.4g: %d adversarial examples saved, %d bytes", self.check_id, eps, n, entry["bytes"])


class MinimalSaver:
    """Writes the shards of a minimal-norm check: one folder ``minimal/`` (not one per epsilon) with
    each point's minimal example, its norm as the check counts it, the prediction on it and whether
    a valid example was found (:class:`robustlab.adversarial_examples.MinimalAt` reads it at any eps)."""

    def __init__(self, ctx: "RunContext", *, check_id: str, check: str, norm: "Norm", epsilons: Sequence[float]) -> None:
        from ..adversarial_examples import root_of

        self.ctx, self.check_id, self.check, self.norm = ctx, check_id, check, norm
        self.epsilons = [float(e) for e in epsilons]
        self.root = root_of(ctx.out_dir)

    def write(self, start: int, stop: int, x: "torch.Tensor", y: "torch.Tensor", x_adv: "torch.Tensor", min_norm: "torch.Tensor") -> None:
        """Batch ``[start, stop)`` from the attack's result: ``min_norm`` (n,) is 0 for clean errors,
        +inf where nothing was found, else the re-checked norm of ``x_adv``."""
        import torch

        from ..adversarial_examples import minimal_dir, shard_path, write_shard

        ctx = self.ctx
        mn = min_norm.detach().cpu()
        correct = mn > 0
        found = correct & torch.isfinite(mn)
        keep = found.to(x.device).reshape(-1, *([1] * (x.ndim - 1)))
        xs = torch.where(keep, x_adv.to(x.device), x)
        with torch.no_grad():
            pred = ctx.model(xs.to(ctx.device)).argmax(1)
        write_shard(shard_path(minimal_dir(self.root, self.check_id), start, stop), ids=ctx.data.ids[start:stop], y=y.cpu().numpy(),
                    x_adv=xs.detach().cpu().float().numpy(), pred=pred.cpu().numpy(), correct=correct.numpy(), success=found.numpy(),
                    norm=torch.where(found, mn, torch.zeros_like(mn)).float().numpy())

    def finish(self, n: int, batch: Callable[[int, int], Any]) -> None:
        """After the batches: recompute any batch whose shard is missing or has no recorded sha256,
        then index them with their recorded hashes, verified (main rank)."""
        from ..adversarial_examples import minimal_dir, record_minimal

        if not self.ctx.dist.is_main:
            return
        _redo(self.ctx, self.root, minimal_dir(self.root, self.check_id), n, batch, self.check_id)
        entry = record_minimal(self.root, check_id=self.check_id, check=self.check, norm=self.norm.value, epsilons=self.epsilons, n=n)
        log.info("%s: %d minimal adversarial examples saved, %d bytes", self.check_id, n, entry["bytes"])


def _redo(ctx: "RunContext", root: "Path", folder: "Path", n: int, batch: Callable[[int, int], Any], check_id: str) -> None:
    """Recompute the batches of ``folder`` whose shard is missing, or present without a recorded
    sha256 (nothing vouches for its content: it is never indexed as it is)."""
    from ..adversarial_examples import tiling, unrecorded

    _shards, gaps = tiling(folder, n)
    for a, b in gaps:
        log.info("%s: adversarial examples of samples %d-%d missing on disk; recomputing them", check_id, a, b)
    redo = unrecorded(root, folder, n)
    for a, b in redo:
        log.warning("%s: adversarial examples of samples %d-%d in %s have no recorded sha256 (a run stopped before recording it); recomputing them", check_id, a, b, folder)
    bs = ctx.batch_size
    for a, b in sorted(gaps + redo):
        for s in range(a, b, bs):
            batch(s, min(s + bs, b))
