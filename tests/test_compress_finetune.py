"""robustlab compress prune-*:<s> --epochs N: the pruned model is fine-tuned on training data with
its pruned entries held at exactly zero, the fine-tuning is recorded, test images are refused, and
the variant loads back without --trust-code."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from robustlab.compress import CompressionError, CompressionSpec
from robustlab.compress.prune import prune_unstructured, zeros_held
from robustlab.data import load_dataset
from robustlab.models import LoadOptions, load_model
from robustlab.pipelines.compress import CompressConfig, compress


def _zero_masks(net: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach() == 0 for n, p in net.named_parameters() if n.endswith(("weight", "bias")) and p.dim() >= 1}


def test_zeros_are_held_while_the_optimizer_pushes_every_weight() -> None:
    torch.manual_seed(0)
    net = prune_unstructured(nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)), 0.6)
    before = _zero_masks(net)
    opt_x = torch.randn(8, 1, 8, 8)
    with zeros_held(net, structured=False):
        opt = torch.optim.SGD(net.parameters(), lr=1.0, weight_decay=0.5)
        for _ in range(3):
            opt.zero_grad()
            net(opt_x).pow(2).sum().backward()
            opt.step()
            for m in (net[0], net[2]):
                assert torch.equal(m.weight == 0, before[f"{'0' if m is net[0] else '2'}.weight"])  # zero in every forward
    assert all(not hasattr(m, "weight_orig") and not hasattr(m, "weight_mask") for m in net.modules())  # a plain module again
    after = _zero_masks(net)
    assert torch.equal(after["0.weight"], before["0.weight"]) and torch.equal(after["2.weight"], before["2.weight"])


@pytest.mark.slow  # two compressions and one epoch on the 1437 digits training images (about 10-30 s on 2 shared cores)
def test_structured_pruning_finetunes_with_the_channels_held_at_zero(tmp_path: Path) -> None:
    test = load_dataset("digits", split="test")
    x, y = test.images(), test.y
    spec = CompressionSpec.parse("prune-structured:0.5")
    plain = compress(CompressConfig("zoo:digits-cnn", LoadOptions(), spec, tmp_path / "p.safetensors", batch_size=64))
    tuned = compress(CompressConfig("zoo:digits-cnn", LoadOptions(), spec, tmp_path / "ft.safetensors", epochs=1, batch_size=64, seed=3))
    p = load_model(str(plain.path), LoadOptions(trust_code=False))
    v = load_model(str(tuned.path), LoadOptions(trust_code=False))
    assert not v.info.trusted and v.info.format == "safetensors"
    mp, mv = _zero_masks(p.net), _zero_masks(v.net)
    assert mp.keys() == mv.keys()
    for name in mp:  # exactly the same entries are zero: nothing pruned came back, nothing else was zeroed
        assert torch.equal(mp[name], mv[name]), name
    conv = v.net.conv1
    removed = (conv.weight.flatten(1) == 0).all(dim=1)
    assert removed.any() and bool((conv.bias[removed] == 0).all())  # removed channels keep a zero bias
    assert not torch.equal(p.net.conv1.weight, v.net.conv1.weight)  # the kept weights were trained
    assert tuned.compression["measured_sparsity"] == plain.compression["measured_sparsity"] > 0
    rec = v.info.extra["compression"]
    train = load_dataset("digits", split="train")
    assert rec["finetune"]["epochs"] == 1 and rec["finetune"]["seed"] == 3
    assert rec["finetune"]["data"]["split"] == "train" and rec["finetune"]["data"]["n"] == len(train)
    assert rec["finetune"]["data"]["sha256"] == train.content_sha256()
    assert "finetune" not in p.info.extra["compression"]
    with torch.no_grad():
        acc_plain = float((p(x).argmax(1) == y).float().mean())
        acc_tuned = float((v(x).argmax(1) == y).float().mean())
    # measured: 0.906 without, 0.972 with one epoch (360 test digits); 0.02 is about 7 images of noise
    assert acc_tuned >= acc_plain - 0.02, (acc_plain, acc_tuned)


def test_finetuning_on_test_images_is_refused(tmp_path: Path) -> None:
    test = load_dataset("digits", split="test")
    xs = (test.images(slice(0, 40)).numpy()[:, 0] * 255).round().astype(np.uint8)
    np.savez(tmp_path / "cal.npz", x=xs[..., None], y=test.y[:40].numpy())
    with pytest.raises(CompressionError, match="test split of digits"):
        compress(CompressConfig("zoo:digits-cnn", LoadOptions(), CompressionSpec.parse("prune-unstructured:0.5"), tmp_path / "v.safetensors",
                                calibration_data=f"npz:{tmp_path / 'cal.npz'}", epochs=1))
    assert not (tmp_path / "v.safetensors").exists()


@pytest.mark.parametrize("method,epochs", [("fp16", "1"), ("int8-static", "2"), ("qat", "0")])
def test_epochs_without_a_finetuning_stage_is_a_usage_error(method: str, epochs: str, tmp_path: Path) -> None:
    from robustlab.cli import main

    r = CliRunner().invoke(main, ["compress", "--model", "zoo:digits-cnn", "--method", method, "--epochs", epochs, "--out", str(tmp_path / "v.safetensors")])
    assert r.exit_code == 2, r.output
    assert len(r.output.strip().splitlines()) == 1 and "--epochs" in r.output
    assert not (tmp_path / "v.safetensors").exists()
