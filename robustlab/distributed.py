"""torch.distributed support: ``torchrun --nproc-per-node K -m robustlab evaluate ...``.

robustlab does no scheduling of its own. Under torchrun every rank loads the model and data, the
batches of every check are dealt round-robin to the ranks (:meth:`RunContext.map_batches`), each
rank computes its batches, and the per-batch results are exchanged with ``all_gather_object`` so
every rank holds all of them; rank 0 writes the one scorecard. Because all randomness is seeded per
sample, the scorecard is identical to a single-process run with the same seed.
Backends: gloo on CPU, NCCL on CUDA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def from_env() -> DistInfo:
    """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return DistInfo(rank=int(os.environ.get("RANK", "0")), world_size=world, local_rank=int(os.environ.get("LOCAL_RANK", "0")))


def init(device_type: str) -> DistInfo:
    """Initialise the default process group when launched by torchrun (no-op otherwise)."""
    info = from_env()
    if not info.enabled:
        return info
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    watch_launcher(info)
    return info


#: how often a rank checks that its torchrun launcher is still there (seconds)
LAUNCHER_POLL_SECONDS = 1.0


def watch_launcher(info: DistInfo) -> None:
    """Stop this rank when its torchrun launcher dies.

    torchrun starts every rank in a session of its own, so a launcher killed with ``kill -9`` (a CI
    timeout, the OOM killer) left its ranks running to the end of the evaluation, holding the output
    folder's lock: ``--resume`` was refused until they finished. A daemon thread notices that the
    rank's parent changed, says so in one line and ends the process at once; the batches already
    stored stay in ``OUT/results.rank*.sqlite`` for ``--resume``.
    """
    import sys
    import threading
    import time

    ppid = os.getppid()
    if ppid <= 1:  # already orphaned, or started by init: nothing to watch
        return

    def watch() -> None:
        while True:
            time.sleep(LAUNCHER_POLL_SECONDS)
            if os.getppid() != ppid:
                try:
                    sys.stderr.write(f"error: rank {info.rank}: the torchrun launcher (pid {ppid}) is gone, so this rank stops; the batches "
                                     f"already computed are stored: run the same command again with --resume.\n")
                    sys.stderr.flush()
                finally:
                    os._exit(143)  # as if terminated (128 + SIGTERM); SQLite's commits are atomic, the flock goes with the process

    threading.Thread(target=watch, name="robustlab-watch-launcher", daemon=True).start()


def all_gather_object(obj: Any, info: DistInfo) -> list[Any]:
    if not info.enabled:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
