"""Monte-Carlo votes of a base classifier under Gaussian noise, sampled and counted on the device.

The noise of image ``i`` comes from its own generator, seeded from the image's seed, and is drawn
in blocks whose sizes depend only on the number of samples and the image size, never on the batch
size. Forward batches are cut from these blocks (several images share a batch when ``num`` is
small), predictions are counted with ``bincount`` on the device, and nothing is copied to the host:
callers sync once per group of images.
"""

from __future__ import annotations

import copy
import logging
from typing import Callable, Sequence

import torch

from ..errors import ModelOutputError

log = logging.getLogger(__name__)

#: Noise is drawn in blocks of at most this many elements (64 MiB of float32). A constant, so the
#: noise of an image never depends on the batch size.
NOISE_BLOCK_ELEMENTS = 1 << 24


def noise_block_size(sample_numel: int) -> int:
    """Samples per noise block for inputs of ``sample_numel`` elements."""
    return max(1, NOISE_BLOCK_ELEMENTS // max(1, sample_numel))


def fast_classifier(model: torch.nn.Module, *, channels_last: bool = True, fold_bn: bool = True) -> torch.nn.Module:
    """A copy of ``model`` with channels-last weights (2x faster convolutions on CPU) and, with
    ``fold_bn``, its network's eval-mode batch norms folded into the convolutions before them
    (:func:`robustlab.models.fold.fold_batch_norm`; a CIFAR ResNet-18's noisy forward passes 1.3-1.5x
    faster on a CPU at batches of 128-1000), or the model.

    The copy computes the same function (up to float rounding, as a different batch size would);
    the caller's model is never modified. Falls back to ``model`` when it cannot be copied.
    """
    if not channels_last:
        return model
    try:
        fast = copy.deepcopy(model)
        net = getattr(fast, "net", None)
        if fold_bn and isinstance(net, torch.nn.Module) and getattr(fast, "_input_dtype", None) is None:
            from ..models.fold import fold_batch_norm

            done = fold_batch_norm(net, copy_net=False)  # ``fast`` is already a copy
            if done is not None:
                fast.net = done[0]
        return fast.to(memory_format=torch.channels_last)
    except (TypeError, RuntimeError, copy.Error) as exc:
        log.debug("channels-last copy of the model failed (%s); using the model as is", exc)
        return model


def same_function(model: torch.nn.Module, fast: torch.nn.Module, x: torch.Tensor, *, tolerance: float = 1e-4) -> bool:
    """Whether ``fast`` gives ``model``'s logits on ``x`` (at most 8 rows) within ``tolerance`` of their
    largest magnitude (:func:`robustlab.models.fold.logits_agree`)."""
    from ..models.fold import copy_agrees

    with torch.no_grad():
        xs = x[:8]
        want = model(xs)
        return copy_agrees(want, lambda: fast(xs.contiguous(memory_format=torch.channels_last) if xs.ndim == 4 else xs), tolerance=tolerance)


@torch.inference_mode()
def count_votes(
    classifier: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    seeds: Sequence[int],
    *,
    num: int,
    sigma: float,
    num_classes: int,
    batch_size: int,
    channels_last: bool = False,
    check_output: Callable[[torch.Tensor, int], None] | None = None,
    require_finite: bool = True,
) -> torch.Tensor:
    """Count the base classifier's top-1 predictions on ``num`` noisy copies of each image.

    Args:
        classifier: maps (b, C, H, W) inputs to (b, K) logits (a :class:`RobustModel`: inputs in its
            bounds, normalisation inside).
        x: (G, C, H, W) clean images, on the classifier's device.
        seeds: G seeds; image ``i``'s noise depends only on ``seeds[i]`` (not on G or the batch size).
        num: noise samples per image.
        sigma: noise standard deviation, in input units. Noisy inputs are *not* clamped to the
            model's bounds (as in Cohen et al.).
        num_classes: K.
        batch_size: inputs per forward pass.
        channels_last: feed inputs in channels-last layout (use with a channels-last model).
        check_output: called once on the first logits, e.g. ``RobustModel.check_output``.
        require_finite: check every batch's logits for NaN and infinity, with one host sync at the
            end (:class:`ModelOutputError` if any was not finite).
    Returns:
        (G, K) int64 counts on ``x.device`` (no host sync unless ``require_finite``).
    References: Cohen et al. 2019, ``Smooth._sample_noise`` (locuslab/smoothing, ``core.py``); here the
        noise stays on the device and counting is a single ``bincount`` per forward pass.
    """
    g_count, k = int(x.shape[0]), int(num_classes)
    dev = x.device
    counts = torch.zeros(g_count * k, dtype=torch.long, device=dev)
    if num <= 0 or g_count == 0:
        return counts.view(g_count, k)
    batch_size = max(1, int(batch_size))
    block = noise_block_size(int(x[0].numel()))
    shape = tuple(x.shape[1:])
    pend_x: list[torch.Tensor] = []
    pend_i: list[torch.Tensor] = []
    pending = 0
    checked = check_output is None
    nonfinite = torch.zeros((), dtype=torch.long, device=dev)  # noisy inputs whose logits are not finite

    def run(xs: torch.Tensor, idx: torch.Tensor) -> None:
        nonlocal checked
        if channels_last and xs.ndim == 4:
            xs = xs.contiguous(memory_format=torch.channels_last)
        logits = classifier(xs)
        if not checked:
            assert check_output is not None
            # non-finite rows are counted below and reported with sigma at the end: the check sees the others
            rows = logits[torch.isfinite(logits).all(1)] if require_finite and logits.ndim == 2 else logits
            if rows.shape[0]:
                check_output(rows, int(rows.shape[0]))
                checked = True
        if require_finite:
            nonfinite.add_((~torch.isfinite(logits)).any(1).sum())
        counts.add_(torch.bincount(idx * k + logits.argmax(1), minlength=g_count * k))

    def flush(final: bool) -> None:
        nonlocal pend_x, pend_i, pending
        xs = torch.cat(pend_x) if len(pend_x) > 1 else pend_x[0]
        idx = torch.cat(pend_i) if len(pend_i) > 1 else pend_i[0]
        stop = pending if final else (pending // batch_size) * batch_size
        for s in range(0, stop, batch_size):
            run(xs[s : s + batch_size], idx[s : s + batch_size])
        pend_x, pend_i = ([xs[stop:]], [idx[stop:]]) if stop < pending else ([], [])
        pending -= stop

    for i in range(g_count):
        gen = torch.Generator(device=dev)
        gen.manual_seed(int(seeds[i]))
        left = int(num)
        while left > 0:
            b = min(block, left)
            left -= b
            noisy = torch.randn((b, *shape), generator=gen, device=dev, dtype=x.dtype).mul_(sigma).add_(x[i])
            pend_x.append(noisy)
            pend_i.append(torch.full((b,), i, dtype=torch.long, device=dev))
            pending += b
            if pending >= batch_size:
                flush(False)
    if pending:
        flush(True)
    if require_finite:
        bad = int(nonfinite)  # the one host sync of this call
        if bad:
            # argmax of a NaN row is an arbitrary class: counted, it would be a vote the base classifier never cast
            raise ModelOutputError(
                f"the model produced NaN or infinite logits for {bad} of {g_count * int(num)} noisy inputs (sigma {sigma:g}), so the "
                "smoothed classifier is undefined there; make the model's outputs finite for inputs outside its bounds too "
                "(noise is not clamped, as in Cohen et al.)."
            )
    return counts.view(g_count, k)
