"""Certification's noisy forward passes: the smoothing copy folds batch norms, the CPU noise batch is the
run's batch size, and --no-fold-bn reaches the certify check.

The copy (channels-last, batch norms folded) must give the model's votes up to float rounding, and a copy
that disagrees with the model on the first images must never be used.
"""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from robustlab.smoothing import classifier as smoothing_classifier
from robustlab.smoothing.classifier import SmoothedClassifier
from robustlab.smoothing.sampling import fast_classifier

pytestmark = pytest.mark.usefixtures("one_thread")


def _batch_norms(m: nn.Module) -> int:
    return sum(isinstance(x, nn.BatchNorm2d) for x in m.modules())


def test_the_copy_folds_and_keeps_the_votes(cifar_model) -> None:
    fast = fast_classifier(cifar_model)
    assert _batch_norms(fast.net) == 0 and _batch_norms(cifar_model.net) == 20
    assert _batch_norms(fast_classifier(cifar_model, fold_bn=False).net) == 20
    from robustlab.data import load_dataset

    d = load_dataset("samples:cifar10", split="test")
    x = d.images(slice(0, 4))
    seeds = [11, 12, 13, 14]
    folded = SmoothedClassifier(cifar_model, sigma=0.25, batch_size=100).votes(x, seeds, num=300, phase="estimate").cpu()
    plain = SmoothedClassifier(cifar_model, sigma=0.25, batch_size=100, fold_bn=False).votes(x, seeds, num=300, phase="estimate").cpu()
    direct = SmoothedClassifier(cifar_model, sigma=0.25, batch_size=100, channels_last=False).votes(x, seeds, num=300, phase="estimate").cpu()
    assert torch.equal(folded.argmax(1), direct.argmax(1))
    assert int((folded - direct).abs().max()) <= 1 and int((plain - direct).abs().max()) <= 1  # a vote on a rounding tie at most


def test_a_copy_that_disagrees_is_not_used(cifar_model, monkeypatch, caplog) -> None:
    def broken(model: nn.Module, **kw: object) -> nn.Module:
        fast = fast_classifier(model, **kw)  # type: ignore[arg-type]
        with torch.no_grad():
            fast.net.linear.bias.add_(5.0)
        return fast

    monkeypatch.setattr(smoothing_classifier, "fast_classifier", broken)
    smooth = SmoothedClassifier(cifar_model, sigma=0.25, batch_size=64)
    x = torch.rand(3, 3, 32, 32)
    with caplog.at_level("WARNING"):
        clf = smooth._classifier(x)
    assert clf is cifar_model
    assert "disagrees" in caplog.text


def test_cpu_noise_batch_and_no_fold_bn_reach_the_check() -> None:
    from robustlab.checks.base import CHECKS
    from robustlab.runner import RunConfig
    from robustlab.suite import load_suite
    from robustlab.models import LoadOptions

    cls = CHECKS.get("certify")
    check = cls(id="certify", params=cls.parse_params({}))
    cpu = types.SimpleNamespace(device=torch.device("cpu"), batch_size=128)
    gpu = types.SimpleNamespace(device=torch.device("cuda"), batch_size=128)
    assert check._noise_batch(cpu) == 128
    assert check._noise_batch(gpu) == 1000
    fixed = cls(id="certify", params=cls.parse_params({"batch_size": 500}))
    assert fixed._noise_batch(cpu) == fixed._noise_batch(gpu) == 500
    cfg = RunConfig(model_spec="zoo:digits-cnn", load=LoadOptions(device="cpu"), suite=load_suite("quick"))
    assert "fold_bn" not in cfg.recorded_options(None)
    from dataclasses import replace

    assert replace(cfg, fold_bn=False).recorded_options(None)["fold_bn"] is False


@pytest.mark.integration
def test_smoothing_votes_bench_runs() -> None:
    import json
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[1] / "bench" / "smoothing_votes.py"
    out = subprocess.run([sys.executable, str(bench), "--points", "1", "--num", "150", "--reps", "1", "--threads", "1"], capture_output=True, text=True,
                         timeout=600, check=True).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert len([r for r in rows if r["task"] == "smoothing/votes"]) == 4
    assert all(r["max_vote_difference_vs_before"] <= 1 for r in rows if r["task"] == "smoothing/votes")
    assert rows[-1]["task"] == "smoothing/votes/ratio" and rows[-1]["same_predictions"] is True


class _Raises(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise TypeError("a copy that cannot run")


def test_a_copy_that_raises_is_not_used(cifar_model, monkeypatch) -> None:
    def broken(model: nn.Module, **kw: object) -> nn.Module:
        fast = fast_classifier(model, **kw)  # type: ignore[arg-type]
        fast.net = _Raises()
        return fast

    monkeypatch.setattr(smoothing_classifier, "fast_classifier", broken)
    smooth = SmoothedClassifier(cifar_model, sigma=0.25, batch_size=64)
    assert smooth._classifier(torch.rand(3, 3, 32, 32)) is cifar_model


def test_a_network_with_hooks_is_not_folded() -> None:
    """A forward hook on a convolution (here an activation clip) would run on the folded convolution's output,
    conv and batch norm together, and a clip that bites only under noise passes the copy's check on clean
    images: the smoothing copy keeps such a network's batch norms, and its votes are the model's."""
    from robustlab.models.wrapper import ModelInfo, RobustModel

    torch.manual_seed(3)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    with torch.no_grad():
        net[1].running_var.fill_(0.01)  # the batch norm scales by 10: clipping before it differs from clipping after it
    net[0].register_forward_hook(lambda _m, _i, out: out.clamp(-0.3, 0.3))
    model = RobustModel(net.eval(), ModelInfo(spec="t", format="t", num_classes=4, input_shape=(3, 8, 8)))
    fast = fast_classifier(model)
    assert _batch_norms(fast.net) == 1
    x = torch.rand(2, 3, 8, 8)
    folded = SmoothedClassifier(model, sigma=0.5, batch_size=50).votes(x, [1, 2], num=200, phase="estimate").cpu()
    direct = SmoothedClassifier(model, sigma=0.5, batch_size=50, channels_last=False).votes(x, [1, 2], num=200, phase="estimate").cpu()
    assert int(folded.sum()) == 400 and int((folded - direct).abs().max()) <= 1
