"""Batch-norm folding for attack iterations (robustlab.models.fold, robustlab.fastpaths.folded_view).

The folded copy must compute the model's function up to float rounding, fold only where that is exact
(a plain convolution used once, feeding only an eval-mode batch norm with running statistics), leave the
caller's network untouched, fall back to the model when its first call disagrees, and be what
``robustlab evaluate`` attacks on unless ``--no-fold-bn`` is given, with every verdict still the model's.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from robustlab.fastpaths import FoldedView, apply_fast_paths, folded_view
from robustlab.models.fold import fold_batch_norm
from robustlab.models.wrapper import ModelInfo, RobustModel

pytestmark = pytest.mark.usefixtures("one_thread")


def _bn(c: int) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(c)
    with torch.no_grad():  # statistics far from the identity, so a missed or wrong fold shows
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return bn


class Shared(nn.Module):
    """conv_a -> bn_a (foldable); conv_s called twice (shared weights: not foldable); conv_b feeds bn_b
    and a skip connection (two users: not foldable); a Linear -> BatchNorm1d head (not a convolution)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_a, self.bn_a = nn.Conv2d(3, 8, 3, padding=1), _bn(8)
        self.conv_s, self.bn_s = nn.Conv2d(8, 8, 3, padding=1), _bn(8)
        self.conv_b, self.bn_b = nn.Conv2d(8, 8, 3, padding=1, bias=False), _bn(8)
        self.fc, self.bn1 = nn.Linear(8, 10), nn.BatchNorm1d(10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn_a(self.conv_a(x)))
        h = torch.relu(self.bn_s(self.conv_s(self.conv_s(h))))
        b = self.conv_b(h)
        h = torch.relu(self.bn_b(b) + b)
        return self.bn1(self.fc(h.mean(dim=(2, 3))))


class Branchy(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), _bn(4)
        self.fc = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.bn(self.conv(x))
        if h.sum() > 0:
            h = h * 2
        return self.fc(h.mean(dim=(2, 3)))


def test_folds_only_where_exact_and_keeps_the_function() -> None:
    torch.manual_seed(0)
    net = Shared().eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    done = fold_batch_norm(net)
    assert done is not None
    folded, count = done
    assert count == 1  # conv_a/bn_a only
    names = dict(folded.named_modules())
    assert "bn_a" not in names and {"bn_s", "bn_b", "bn1"} <= set(names)
    x = torch.rand(5, 3, 8, 8)
    assert torch.allclose(folded(x), net(x), atol=1e-5, rtol=1e-5)
    # the caller's network is untouched
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert isinstance(net.bn_a, nn.BatchNorm2d)


def test_nothing_to_fold_gives_none() -> None:
    torch.manual_seed(0)
    assert fold_batch_norm(Branchy().eval()) is None  # does not trace
    assert fold_batch_norm(Shared().train()) is None  # training mode: batch statistics, nothing to fold
    no_stats = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False)).eval()
    assert fold_batch_norm(no_stats) is None
    assert fold_batch_norm(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval()) is None


def _robust(net: nn.Module) -> RobustModel:
    return RobustModel(net, ModelInfo(spec="t", format="t", num_classes=10, input_shape=(3, 8, 8), mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3)))


def test_view_keeps_the_contract_and_gradients() -> None:
    torch.manual_seed(1)
    model = _robust(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), _bn(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), _bn(8), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)))
    view = folded_view(model)
    assert isinstance(view, FoldedView) and view.folded == 2
    assert view.bounds == model.bounds and view.num_classes == model.num_classes
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.net.modules()) == 2  # the model keeps its own
    x = torch.rand(6, 3, 8, 8)
    assert torch.allclose(view(x), model(x), atol=1e-5)
    assert view.checked and not view.fell_back
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ga = torch.autograd.grad(view(xa).logsumexp(1).sum(), xa)[0]
    gb = torch.autograd.grad(model(xb).logsumexp(1).sum(), xb)[0]
    assert torch.allclose(ga, gb, atol=1e-5, rtol=1e-4)
    # apply_fast_paths: the view by default, none with fold_bn=False, bf16 autocast wraps the view
    assert isinstance(apply_fast_paths(model), FoldedView)
    assert apply_fast_paths(model, fold_bn=False) is None
    bf = apply_fast_paths(model, precision="bf16")
    assert isinstance(bf.model, FoldedView)


def test_view_that_disagrees_falls_back_to_the_model() -> None:
    torch.manual_seed(2)
    model = _robust(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), _bn(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)))
    view = folded_view(model)
    assert view is not None
    with torch.no_grad():  # a folding bug: the copy's convolution is off
        next(view._fast.net.parameters()).mul_(3.0)
    x = torch.rand(4, 3, 8, 8)
    out = view(x)
    assert view.fell_back
    assert torch.equal(out, model(x))
    assert torch.equal(view(x), model(x))  # for good


def test_resnet18_view_and_attack_flags(cifar_model) -> None:
    """The CIFAR ResNet-18: every batch norm folds (20), logits within rounding, and PGD with the view as
    the attack model gives the same robust flags as on the model."""
    from robustlab.attacks.pgd import PGD
    from robustlab.attacks.verified import verified_perturb

    view = folded_view(cifar_model)
    assert view is not None and view.folded == 20
    from robustlab.data import load_dataset

    d = load_dataset("samples:cifar10", split="test")
    x, y = d.images(slice(0, 12)), d.y[:12]
    with torch.no_grad():
        a, b = cifar_model(x), view(x)
    assert float((a - b).abs().max()) < 1e-4 * max(1.0, float(a.abs().max()))
    attack = PGD(norm="linf", steps=10)
    eps = 1 / 255
    plain = verified_perturb(attack, cifar_model, x, y, eps, seeds=list(range(12)), bounds=(0.0, 1.0))
    fast = verified_perturb(attack, cifar_model, x, y, eps, seeds=list(range(12)), bounds=(0.0, 1.0), attack_model=view)
    robust_plain, robust_fast = plain.correct & ~plain.check.valid, fast.correct & ~fast.check.valid
    assert torch.equal(robust_plain, robust_fast)
    assert 0 < int(robust_plain.sum()) < int(plain.correct.sum())


@pytest.mark.integration
def test_evaluate_records_the_view_and_no_fold_bn_turns_it_off(tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text("name: s\nchecks:\n  - check: pgd\n    id: pgd_linf\n    params: {norm: linf, steps: 3, epsilons: [0.004], audit_samples: 2}\n")
    cards = {}
    for name, extra in (("on", []), ("off", ["--no-fold-bn"])):
        out = tmp_path / name
        r = subprocess.run([sys.executable, "-m", "robustlab", "evaluate", "--model", "zoo:cifar10-resnet18", "--suite", str(suite), "--limit", "6",
                            "--out", str(out), "--no-mlflow", "--quiet", *extra], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        cards[name] = json.loads((out / "scorecard.json").read_text())
    on, off = cards["on"], cards["off"]
    assert on["run"]["fold_bn"] is True and on["run"]["folded_batch_norms"] == 20
    assert off["run"]["fold_bn"] is False and off["run"]["folded_batch_norms"] == 0
    note_on = " ".join(on["checks"][0]["notes"])
    assert "20 batch norms folded" in note_on and "classified correctly by the model" in note_on
    assert "batch norms folded" not in " ".join(off["checks"][0]["notes"])
    assert on["checks"][0]["metrics"] == off["checks"][0]["metrics"]


def test_the_run_fingerprint_tells_no_fold_bn_apart() -> None:
    """A run resumed with the other setting recomputes (the attack trajectories differ in their last bits);
    the default leaves the fingerprint of stores written before the option existed unchanged."""
    from dataclasses import replace

    from robustlab.data import load_dataset
    from robustlab.models import LoadOptions, load_model
    from robustlab.runner import RunConfig, run_fingerprint
    from robustlab.suite import load_suite

    model = load_model("zoo:digits-cnn", device="cpu")
    cfg = RunConfig(model_spec="zoo:digits-cnn", load=LoadOptions(device="cpu"), suite=load_suite("quick"))
    raw = load_dataset("digits").limit(8)
    on = run_fingerprint(cfg, model, raw, "digits")
    off = run_fingerprint(replace(cfg, fold_bn=False), model, raw, "digits")
    assert "fold_bn" not in on["options"] and off["options"]["fold_bn"] is False
    assert {k: v for k, v in off.items() if k != "options"} == {k: v for k, v in on.items() if k != "options"}


def test_the_sweep_note_tells_a_fallen_back_copy() -> None:
    """The attack checks' note names the folded copy, or says the iterations ran on the model when it fell back."""
    from robustlab.checks.adversarial_sweep import folded_view_notes

    torch.manual_seed(3)
    model = _robust(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), _bn(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10)))
    view = folded_view(model)
    assert view is not None
    (ok,) = folded_view_notes(view, flipped=1, claimed=7)
    assert "1 batch norms folded" in ok and "1 of 7" in ok
    assert folded_view_notes(None, flipped=0, claimed=0) == []
    with torch.no_grad():
        next(view._fast.net.parameters()).mul_(3.0)
    view(torch.rand(2, 3, 8, 8))
    (fell,) = folded_view_notes(view, flipped=0, claimed=3)
    assert view.fell_back and "ran on the model itself" in fell and "folded into the convolutions before them" not in fell


def test_view_follows_the_models_output_kind() -> None:
    """A network ending in a softmax is found out on the first data batch, after the view was made: the copy
    must return the same log-probabilities as the model, not fall back."""
    torch.manual_seed(4)
    model = _robust(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), _bn(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10), nn.Softmax(dim=1)))
    view = folded_view(model)
    assert view is not None
    x = torch.rand(6, 3, 8, 8)
    with torch.no_grad():
        assert model.detect_probabilities(model(x))
    out = view(x)
    assert not view.fell_back
    assert torch.allclose(out, model(x), atol=1e-5)
    assert float(out.max()) <= 0.0  # log-probabilities


class _FlattenByView(nn.Module):
    """A classifier head that flattens a spatial map with ``.view``, which a channels-last map refuses."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 4, 3, padding=1), _bn(4), nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.relu(self.bn(self.conv(x)))
        return self.fc(z.view(z.shape[0], -1))


def _two_block_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), _bn(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), _bn(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def test_large_cpu_batches_run_on_a_channels_last_copy() -> None:
    """From CHANNELS_LAST_ROWS rows on a CPU the view runs a channels-last copy of the folded network:
    same logits and input gradients as the model, smaller batches and the model untouched."""
    torch.manual_seed(3)
    model = _robust(_two_block_net())
    view = folded_view(model)
    assert view is not None and view.channels_last_rows == FoldedView.CHANNELS_LAST_ROWS
    rows = FoldedView.CHANNELS_LAST_ROWS
    small, big = torch.rand(rows - 1, 3, 8, 8), torch.rand(rows + 4, 3, 8, 8)
    assert torch.allclose(view(small), model(small), atol=1e-5)
    assert view.channels_last_calls == 0 and view._fast_cl is None
    assert torch.allclose(view(big), model(big), atol=1e-5)
    assert view.channels_last_calls == 1
    assert any(p.ndim == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous() for p in view._fast_cl.net.parameters())
    assert all(p.is_contiguous() for p in view._fast.net.parameters()) and all(p.is_contiguous() for p in model.net.parameters())
    xa, xb = big.clone().requires_grad_(True), big.clone().requires_grad_(True)
    ga = torch.autograd.grad(view(xa).logsumexp(1).sum(), xa)[0]
    gb = torch.autograd.grad(model(xb).logsumexp(1).sum(), xb)[0]
    assert torch.allclose(ga, gb, atol=1e-5, rtol=1e-4)
    assert view.channels_last_calls == 2
    off = folded_view(model, channels_last_rows=None)
    off(big)
    assert off.channels_last_calls == 0 and off._fast_cl is None
    # a model already channels-last (--channels-last) needs no second copy
    assert apply_fast_paths(_robust(_two_block_net()), channels_last=True).channels_last_rows is None


def test_channels_last_copy_that_fails_or_disagrees_is_dropped(monkeypatch) -> None:
    torch.manual_seed(4)
    rows = FoldedView.CHANNELS_LAST_ROWS
    big = torch.rand(rows, 3, 8, 8)
    # a network that flattens with .view: the channels-last copy raises, the contiguous copy serves
    model = _robust(_FlattenByView().eval())
    view = folded_view(model)
    assert view is not None and view.folded == 1
    assert torch.allclose(view(big), model(big), atol=1e-5)
    assert view.channels_last_calls == 0 and view.channels_last_rows is None and not view.fell_back
    # a copy whose logits disagree with the model's is never used
    model = _robust(_two_block_net())
    view = folded_view(model)
    real = FoldedView._agrees
    monkeypatch.setattr(FoldedView, "_agrees", lambda self, x, fast, **kw: fast is self._fast and real(self, x, fast, **kw))
    out = view(big)
    assert torch.equal(out, view._fast(big))
    assert view.channels_last_calls == 0 and view._fast_cl is None and view.channels_last_rows is None and not view.fell_back


def _hooked_nets() -> dict[str, nn.Module]:
    """Networks whose hooks are part of their function: the old hook-based ``weight_norm`` and
    ``spectral_norm`` on a convolution before a batch norm, an activation clip as a forward hook on such a
    convolution, and an input scaling as a forward pre-hook on the network itself."""
    from torch.nn.utils import spectral_norm, weight_norm

    nets = {}
    for name in ("weight_norm", "spectral_norm", "clip_hook", "root_pre_hook"):
        torch.manual_seed(7)
        net = _two_block_net()
        if name == "weight_norm":
            weight_norm(net[3])
        elif name == "spectral_norm":
            spectral_norm(net[0])
        elif name == "clip_hook":
            net[3].register_forward_hook(lambda _m, _i, out: out.clamp(-0.05, 0.05))
        else:
            net.register_forward_pre_hook(lambda _m, args: (args[0] * 0.5,))
        nets[name] = net.eval()
    return nets


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("name", ["weight_norm", "spectral_norm", "clip_hook", "root_pre_hook"])
def test_networks_with_hooks_are_not_folded(name: str) -> None:
    """A traced or folded copy would drop or misplace the hooks (and the old ``weight_norm`` hook raises on
    a folded convolution): such a network is attacked as it is, with its own logits and gradients."""
    from robustlab.attacks.pgd import PGD
    from robustlab.attacks.verified import verified_perturb
    from robustlab.models.fold import hooked_module

    net = _hooked_nets()[name]
    model = _robust(net)
    assert hooked_module(net) is not None
    assert fold_batch_norm(net) is None
    assert folded_view(model) is None and apply_fast_paths(model) is None
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    r = verified_perturb(PGD(norm="linf", steps=3), model, x, y, 0.01, seeds=list(range(6)), bounds=(0.0, 1.0))
    assert r.correct.all()


def test_global_module_hooks_count() -> None:
    from torch.nn.modules.module import register_module_forward_hook

    from robustlab.models.fold import hooked_module

    net = _two_block_net().eval()
    assert hooked_module(net) is None and fold_batch_norm(net) is not None
    handle = register_module_forward_hook(lambda _m, _i, out: out)
    try:
        assert hooked_module(net) == "<global>" and fold_batch_norm(net) is None
    finally:
        handle.remove()


class _Raises(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise TypeError("a copy that cannot run")


def test_a_copy_that_raises_falls_back_to_the_model() -> None:
    torch.manual_seed(5)
    model = _robust(_two_block_net().eval())
    view = folded_view(model)
    assert view is not None
    setattr(view._fast.net, "2", _Raises())  # the copy's first ReLU: every call of the copy raises
    x = torch.rand(4, 3, 8, 8)
    out = view(x)
    assert view.fell_back and torch.equal(out, model(x))


def test_logits_agree_with_the_models_own_non_finite_logits() -> None:
    from robustlab.models.fold import logits_agree

    want = torch.tensor([[1.0, float("nan")], [float("inf"), 2.0]])
    assert logits_agree(want, want.clone() + torch.tensor([[1e-6, 0.0], [0.0, 0.0]]))
    assert not logits_agree(want, torch.tensor([[1.0, 0.0], [float("inf"), 2.0]]))
    assert not logits_agree(want, torch.tensor([[1.0, float("nan")], [float("-inf"), 2.0]]))
    assert not logits_agree(want, torch.tensor([[1.1, float("nan")], [float("inf"), 2.0]]))
