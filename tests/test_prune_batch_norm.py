"""Structured pruning removes a channel from what the next layer sees, batch norm or not.

Before: the conv's filter and bias were zeroed but the batch norm after it still produced the constant
``beta - gamma * mean / sqrt(var + eps)`` in that channel, so the pruned network that robustlab measured was
not the channel-cut network it stands for (its logits differed from the cut network's)."""

from __future__ import annotations

import torch
from torch import nn

from robustlab.compress.prune import conv_batch_norms, prune_structured, zeros_held


class Block(nn.Module):
    def __init__(self, c1: int = 8, c2: int = 6) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, c1, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c2, affine=False)
        self.head = nn.Linear(c2, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        return self.head(x.mean(dim=(2, 3)))


def _trained_looking(seed: int = 0) -> Block:
    torch.manual_seed(seed)
    net = Block()
    with torch.no_grad():  # batch norms with the non-trivial statistics and affine terms of a trained network
        for bn in (net.bn1, net.bn2):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
        net.bn1.weight.uniform_(0.5, 1.5)
        net.bn1.bias.uniform_(0.2, 1.0)
    return net.eval()


def _cut(net: Block) -> Block:
    """The deployed network: removed channels cut out of conv1, bn1 and conv2's inputs, conv2, bn2 and head's inputs."""
    k1 = net.conv1.weight.flatten(1).any(dim=1)
    k2 = net.conv2.weight.flatten(1).any(dim=1) | (net.conv2.bias != 0)
    small = Block(int(k1.sum()), int(k2.sum())).eval()
    with torch.no_grad():
        small.conv1.weight.copy_(net.conv1.weight[k1])
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(small.bn1, name).copy_(getattr(net.bn1, name)[k1])
        small.conv2.weight.copy_(net.conv2.weight[k2][:, k1])
        small.conv2.bias.copy_(net.conv2.bias[k2])
        for name in ("running_mean", "running_var"):
            getattr(small.bn2, name).copy_(getattr(net.bn2, name)[k2])
        small.head.weight.copy_(net.head.weight[:, k2])
        small.head.bias.copy_(net.head.bias)
    return small


def test_conv_batch_norm_pairs_are_found_by_tracing() -> None:
    net = _trained_looking()
    assert conv_batch_norms(net) == {net.conv1: net.bn1, net.conv2: net.bn2}


def test_a_structured_pruned_network_equals_the_channel_cut_one() -> None:
    net = _trained_looking()
    pruned = prune_structured(net, 0.5).eval()
    x = torch.randn(5, 3, 10, 10)
    gone = ~pruned.conv1.weight.flatten(1).any(dim=1)
    assert int(gone.sum()) == 4
    assert torch.equal(pruned.bn1(pruned.conv1(x))[:, gone], torch.zeros_like(pruned.bn1(pruned.conv1(x))[:, gone]))
    small = _cut(pruned)
    assert small.conv1.out_channels == 4 and small.conv2.out_channels == 3
    torch.testing.assert_close(pruned(x), small(x), rtol=1e-5, atol=1e-5)
    # the base network is untouched
    assert net.bn1.bias.abs().min() > 0


def test_fine_tuning_keeps_removed_channels_removed() -> None:
    pruned = prune_structured(_trained_looking(), 0.5)
    gone = ~pruned.conv1.weight.flatten(1).any(dim=1)
    opt = torch.optim.SGD(pruned.parameters(), lr=0.5)
    torch.manual_seed(1)
    with zeros_held(pruned, structured=True):
        pruned.train()
        for _ in range(5):
            opt.zero_grad()
            loss = nn.functional.cross_entropy(pruned(torch.randn(8, 3, 10, 10)), torch.randint(0, 4, (8,)))
            loss.backward()
            opt.step()
    pruned.eval()
    assert torch.equal(pruned.bn1.weight[gone], torch.zeros(int(gone.sum()))) and torch.equal(pruned.bn1.bias[gone], torch.zeros(int(gone.sum())))
    x = torch.randn(5, 3, 10, 10)
    assert torch.equal(pruned.bn1(pruned.conv1(x))[:, gone], torch.zeros(5, int(gone.sum()), 10, 10))
    torch.testing.assert_close(pruned(x), _cut(pruned)(x), rtol=1e-5, atol=1e-5)
