"""Bucketed batch sizes for gradient passes on a CPU (issue 21: the C heap's fragmentation under early exit)."""

from __future__ import annotations

import pytest
import torch

from robustlab.models import load_model
from robustlab.models.wrapper import bucket_size


def test_bucket_sizes_are_few_and_waste_at_most_a_quarter() -> None:
    sizes = [bucket_size(n) for n in range(1, 4097)]
    assert all(b >= n for n, b in zip(range(1, 4097), sizes))
    assert all(b <= 1.25 * n for n, b in zip(range(9, 4097), sizes[8:]))
    assert len(set(sizes[:128])) == 24 and bucket_size(128) == 128 and bucket_size(129) == 160
    assert all(bucket_size(b) == b for b in set(sizes))


@pytest.mark.parametrize("threads", [1, 2])
def test_padded_gradient_pass_gives_the_same_logits_and_gradients_bit_for_bit(monkeypatch, threads) -> None:
    torch.set_num_threads(threads)
    model = load_model("zoo:cifar10-resnet18", device="cpu")
    x = torch.rand(13, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    calls: list[int] = []
    h = model.net.register_forward_pre_hook(lambda _m, inp: calls.append(inp[0].shape[0]))

    def logits_and_grad() -> tuple[torch.Tensor, torch.Tensor]:
        xa = x.clone().requires_grad_(True)
        out = model(xa)
        return out.detach(), torch.autograd.grad(out.logsumexp(1).sum(), xa)[0]

    monkeypatch.setenv("ROBUSTLAB_PAD_BATCHES", "0")
    ref = logits_and_grad()
    monkeypatch.setenv("ROBUSTLAB_PAD_BATCHES", "1")
    got = logits_and_grad()
    with torch.no_grad():
        model(x)  # no gradient: never padded
    _, feats = model.logits_and_features(x.clone().requires_grad_(True))  # the feature hook sees this batch only
    h.remove()
    assert calls == [13, 14, 13, 13]
    assert got[0].shape == (13, 10) and torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])
    assert feats.shape[0] == 13


def test_padding_is_the_default_and_never_touches_a_training_forward(monkeypatch) -> None:
    model = load_model("zoo:digits-cnn", device="cpu")
    shape = model.input_shape
    assert shape is not None
    x = torch.rand(11, *shape, generator=torch.Generator().manual_seed(1))
    calls: list[int] = []
    h = model.net.register_forward_pre_hook(lambda _m, inp: calls.append(inp[0].shape[0]))
    monkeypatch.delenv("ROBUSTLAB_PAD_BATCHES", raising=False)
    model(x.clone().requires_grad_(True))  # default: padded to the bucket size 12
    model.net.train()
    try:
        model(x.clone().requires_grad_(True))  # training: batch-norm statistics must see real rows only
    finally:
        model.net.eval()
    monkeypatch.setenv("ROBUSTLAB_PAD_BATCHES", "0")
    model(x.clone().requires_grad_(True))  # the opt-out
    h.remove()
    assert calls == [12, 11, 11]
