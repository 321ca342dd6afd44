"""Adversarial training steps run the network in training mode.

The attack of a training batch runs with batch-norm statistics frozen (``eval_mode``), but the
training forward pass after it must see the network in training mode: batch statistics, running
statistics updated, dropout on. Before the fix, ``eval_mode`` restored only the wrapper's own flag
(a loaded ``RobustModel`` is in eval mode) and so left the trained ``net`` in eval mode for every
step: fine-tuning ``zoo:cifar10-resnet18`` with fast-at then diverged to a NaN loss within a few
steps at lr 0.01, because batch norm no longer normalised the shifted activations.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from robustlab.data.base import Dataset
from robustlab.defenses.base import eval_mode
from robustlab.defenses.trainer import TrainConfig, train
from robustlab.models.wrapper import ModelInfo, RobustModel
from robustlab.pipelines.defend import build_method


def _tiny_bn_model(seed: int = 0) -> RobustModel:
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Dropout(0.5), nn.Linear(4 * 6 * 6, 3))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    info = ModelInfo(spec="test:tiny-bn", format="test", num_classes=3, input_shape=(1, 6, 6), bounds=(0.0, 1.0))
    return RobustModel(net, info).eval()  # as load_model returns it


def _data(n: int = 48) -> Dataset:
    g = torch.Generator().manual_seed(1)
    y = torch.arange(n) % 3
    x = (0.2 + 0.3 * y.view(n, 1, 1, 1).float() + 0.1 * torch.rand(n, 1, 6, 6, generator=g)).clamp(0, 1)
    return Dataset(spec="synthetic", split="train", ids=[f"s/{i}" for i in range(n)], y=y, classes=["a", "b", "c"], x=x)


def test_eval_mode_restores_every_submodule_flag() -> None:
    model = _tiny_bn_model()
    model.net.train()  # the trainer's situation: wrapper in eval mode, network in training mode
    before = {name: m.training for name, m in model.named_modules()}
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert {name: m.training for name, m in model.named_modules()} == before


@pytest.mark.parametrize("method,params", [("fast-at", {"eps": 0.1}), ("pgd-at", {"eps": 0.1, "steps": 2}), ("trades", {"eps": 0.1, "steps": 2})])
def test_training_forward_runs_in_train_mode(tmp_path: Path, method: str, params: dict) -> None:
    """The loss forward of every step sees the net in training mode (batch-norm running statistics
    move), and the model comes back in eval mode."""
    model = _tiny_bn_model()
    bn = model.net[1]
    assert isinstance(bn, nn.BatchNorm2d)
    mean0 = bn.running_mean.clone()
    modes: list[bool] = []
    hook = bn.register_forward_pre_hook(lambda mod, inp: modes.append(mod.training))
    m = build_method(method, params).resolve(model)
    cfg = TrainConfig(epochs=1, batch_size=16, lr=0.01, schedule="constant", val_limit=None)
    train(model, m, _data(), None, cfg, ckpt_dir=tmp_path / "ckpt")
    hook.remove()
    assert True in modes, "no forward pass of the network ran in training mode"
    assert int(bn.num_batches_tracked) >= 3  # at least one update of the running statistics per training step (48 / 16)
    assert not torch.allclose(bn.running_mean, mean0)
    assert not any(mod.training for mod in model.modules())
