"""PT2E int8 on a network with batch-norm (the zoo's digits CNN has none): batch-norm is folded before
quantization, the integer model is rebuilt bit-exactly from the stored state on a freshly initialised
copy of the architecture (what loading a variant file does), and it runs oneDNN int8 kernels."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("torchao")

from robustlab.compress import pt2e  # noqa: E402


class _BNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn(self.conv(x)))
        out = torch.relu(self.conv2(out))
        return self.fc(nn.functional.adaptive_avg_pool2d(out, 1).flatten(1))


def _trained(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    net = _BNNet()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.5, 0.5)
        net.bn.running_var.uniform_(0.5, 2.0)
        net.bn.weight.uniform_(0.5, 1.5)
    return net.eval()


def test_batchnorm_net_rebuilds_exactly_from_its_stored_state() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, 12, 12, generator=g)
    net = _trained(1)
    prepared = pt2e.prepare_fake_quant(net, (3, 12, 12))
    ops = {str(n.target) for n in prepared.graph.nodes if n.op == "call_function"}
    assert not any("batch_norm" in o for o in ops), ops  # folded into the convolution
    pt2e.calibrate(prepared, [x[:16], x[16:]])
    pt2e.freeze(prepared)
    state = {k: v.clone() for k, v in prepared.state_dict().items()}
    integer = pt2e.to_integer(prepared, (3, 12, 12))
    assert sum(o.startswith("onednn.qconv") for o in pt2e.integer_ops(integer)) == 2
    assert sum(o.startswith("onednn.qlinear") for o in pt2e.integer_ops(integer)) == 1
    with torch.no_grad():
        want = integer(x)
        assert (want.argmax(1) == net(x).argmax(1)).float().mean() >= 0.8
        assert torch.allclose(prepared(x), want, atol=0.25 * float(want.abs().max()))  # surrogate tracks the integer model

    fresh = _trained(2)  # other weights and statistics: everything must come from the stored state
    again = pt2e.prepare_fake_quant(fresh, (3, 12, 12))
    again.load_state_dict(state, strict=True)
    pt2e.freeze(again)
    pt2e._CACHE.clear()  # rebuild, not the cached lowering
    rebuilt = pt2e.to_integer(again, (3, 12, 12))
    assert rebuilt is not integer
    with torch.no_grad():
        assert torch.equal(rebuilt(x), want)
        assert rebuilt(x[:1]).shape == (1, 5)  # any batch size, one lowering
    xg = x[:4].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(again(xg).sum(), xg)
    assert grad.abs().sum() > 0  # straight-through gradient of the fake-quantized surrogate


def test_compress_int8_prints_no_torchao_import_notice(tmp_path):
    """torchao's import logged a `register_constant` deprecation line through torch's logger, a stray stderr line
    before robustlab's own output (and before the one `error:` line of a failure). A fresh process is needed:
    torchao logs it only when it is first imported."""
    import subprocess
    import sys

    pytest.importorskip("torchao")
    out = tmp_path / "int8.safetensors"
    r = subprocess.run([sys.executable, "-m", "robustlab", "compress", "--model", "zoo:digits-cnn", "--method", "int8-dynamic", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "register_constant" not in r.stderr and "KernelPreference" not in r.stderr, r.stderr
    assert out.is_file()
