"""Batch sizes from a short list (four per octave), so that tensors of a few sizes recur and the C
heap reuses their freed blocks. Torch-free: the attack layer and the model wrapper both use it."""

from __future__ import annotations

__all__ = ["bucket_size", "rows_after_exit"]


def bucket_size(n: int) -> int:
    """The smallest size >= n of the form m * 2**k with m in {4, 5, 6, 7} (every n up to 8 is its own).

    Sizes: ..., 8, 10, 12, 14, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, ...: four per
    octave, so padding adds at most 25% rows.
    """
    if n <= 8:
        return n
    base = 1 << (n.bit_length() - 3)  # n in [4 * base, 8 * base)
    return -(-n // base) * base


def rows_after_exit(active: int, rows: int) -> int:
    """How many rows an attack's state keeps when ``active`` of its ``rows`` are still unbroken:
    the bucket size of ``active`` (:func:`bucket_size`), never more than ``rows``, 0 when none is.

    Dropping exactly the broken rows gave every early exit a new tensor size, and on a CPU the holes
    those sizes left in the C heap made an attack's peak memory climb batch after batch (APGD-CE on
    the CIFAR-10 ResNet-18, batches of 128: 1.37 GB in the first batch, 2.02 GB by the 50th). With a
    few fixed sizes freed blocks are reused. The rows kept beyond ``active`` belong to points already
    broken and are never recorded again; a gradient pass is padded to the same bucket size anyway
    (:meth:`robustlab.models.wrapper.RobustModel.forward`), so the work is unchanged.
    """
    return min(rows, bucket_size(active)) if active > 0 else 0
