"""Local evaluation of Square Attack's candidates (robustlab.attacks.local_forward).

A candidate differs from its point's current best only on a small square. :class:`LocalForward` recomputes
each convolution, ReLU and residual sum only on the box the change reaches, from cached maps of the best,
and the rest of the network in full. Its logits must be the network's up to float rounding wherever the
square lies (corners and edges included, where the boxes leave the map), through stride-2 convolutions,
1x1 shortcuts and in-place ReLUs; accepting a candidate must leave the cache equal to a fresh one; and
Square Attack must return the same points with and without it.
"""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from robustlab.attacks.local_forward import LocalForward, _Box
from robustlab.attacks.square_local import local_forward_for
from robustlab.attacks.square import square_linf
from robustlab.attacks.unit_box import UnitBox
from robustlab.fastpaths import folded_view
from robustlab.models.wrapper import ModelInfo, RobustModel

pytestmark = pytest.mark.usefixtures("one_thread")


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)  # torchvision's habit: evaluated out of place by LocalForward
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential() if stride == 1 and cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.short(x))


class TinyResNet(nn.Module):
    """Stem, one block per stage at 32, 16 and 8 pixels (stride-2 convolutions, 1x1 shortcuts), pool, linear."""

    def __init__(self, seed: int = 0, width: int = 8, classes: int = 5) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layers = nn.Sequential(_Block(width, width, 1), _Block(width, 2 * width, 2), _Block(2 * width, 4 * width, 2))
        self.linear = nn.Linear(4 * width, classes)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = nn.functional.relu(self.bn1(self.conv1(x)))
        h = self.layers(h)
        return self.linear(nn.functional.adaptive_avg_pool2d(h, 1).flatten(1))


def _model(bounds: tuple[float, float] = (0.0, 1.0), seed: int = 0) -> RobustModel:
    info = ModelInfo(spec="t", format="t", num_classes=5, input_shape=(3, 32, 32), mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.3), bounds=bounds)
    net = TinyResNet(seed).eval()
    with torch.no_grad():  # centre the logits on random images, else one class wins everywhere
        z = net((torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) - 0.4) / 0.25)
        net.linear.weight.mul_(20.0 / float(z.std()))
        net.linear.bias.sub_(net((torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(seed)) - 0.4) / 0.25).mean(0))
    return RobustModel(net, info)


def _candidates(x: torch.Tensor, pts: list[int], tops: list[int], lefts: list[int], s: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xn = x[pts].clone()
    crop = torch.rand(len(pts), 3, s, s, generator=g)
    for i, (t, l) in enumerate(zip(tops, lefts)):
        xn[i, :, t : t + s, l : l + s] = crop[i]
    return xn, crop


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(((a - b).abs() / (1 + b.abs())).max())


@pytest.mark.parametrize("fold", [True, False])
def test_logits_equal_the_networks_for_squares_anywhere(fold: bool) -> None:
    model = _model()
    view = folded_view(model) if fold else model
    assert view is not None
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        view(x)
    lf = local_forward_for(view)
    assert lf is not None
    assert _rel(lf.set_base(x), model(x)) < 1e-5
    spots = [(0, 0), (0, 29), (29, 0), (29, 29), (14, 15), (1, 30), (30, 2), (7, 21)]  # corners, edges, middle
    for s in (1, 2, 3):
        tops = [min(t, 32 - s) for t, _ in spots]
        lefts = [min(l, 32 - s) for _, l in spots]
        pts = [i % 3 for i in range(len(spots))]
        xn, crop = _candidates(x, pts, tops, lefts, s, seed=s)
        got = lf.logits(torch.tensor(pts), tops, lefts, crop)
        assert _rel(got, model(xn)) < 1e-5, s
        stem = lf.last[next(n for n in lf.nodes if n.op == "call_module")]
        assert isinstance(stem, _Box) and (stem.bh, stem.bw) == (s + 2, s + 2)  # the stem convolution ran on its box only
        local = sum(isinstance(v, _Box) for v in lf.last.values())
        full = len(lf.last) - local
        assert local >= 6 and full >= 4, (local, full)  # part local, part full: both paths and the frontier exercised


def test_accepting_a_candidate_updates_the_cache_like_a_fresh_one() -> None:
    model = _model(seed=2)
    view = folded_view(model)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    lf = local_forward_for(view)
    assert lf is not None
    lf.set_base(x)
    xn, crop = _candidates(x, [1, 0, 1], [0, 12, 28], [30, 5, 28], 2, seed=4)
    lf.logits(torch.tensor([1, 0, 1]), [0, 12, 28], [30, 5, 28], crop)
    lf.accept([2])  # row 2 (point 1, square at the bottom-right corner) is the new best of point 1
    fresh = local_forward_for(view)
    assert fresh is not None
    new_x = torch.stack([x[0], xn[2]])
    fresh.set_base(new_x)
    for n, v in fresh.base.items():
        assert _rel(lf.base[n], v) < 1e-5, n.name
    xm, crop2 = _candidates(new_x, [1, 1], [3, 29], [3, 0], 3, seed=5)
    assert _rel(lf.logits(torch.tensor([1, 1]), [3, 29], [3, 0], crop2), model(xm)) < 1e-5
    lf.keep(torch.tensor([1]))  # point 1 becomes point 0
    xk, crop3 = _candidates(new_x[1:], [0], [16], [16], 1, seed=6)
    assert _rel(lf.logits(torch.tensor([0]), [16], [16], crop3), model(xk)) < 1e-5


def test_bounds_other_than_the_unit_box() -> None:
    model = _model(bounds=(-1.0, 1.0), seed=4)
    ref = UnitBox(folded_view(model), -1.0, 1.0)  # what Square attacks: inputs in [0, 1]
    u = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    lf = local_forward_for(ref)
    assert lf is not None
    assert _rel(lf.set_base(u), ref(u)) < 1e-5
    un, crop = _candidates(u, [0, 1], [4, 20], [9, 31 - 2], 2, seed=7)
    assert _rel(lf.logits(torch.tensor([0, 1]), [4, 20], [9, 29], crop), ref(un)) < 1e-5


class PoolStem(nn.Module):
    """ImageNet-style stem: 7x7 stride-2 convolution, batch norm, then a 3x3 stride-2 max-pool with no ReLU
    before it, so maps hold negative values at the borders (a pool padded with zeros would be wrong there)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(6)
        self.conv = nn.Conv2d(3, 8, 7, 2, 3, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.block = _Block(8, 8, 1)
        self.linear = nn.Linear(8, 4)
        self.bn.running_mean.fill_(2.0)  # mostly negative maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block(self.pool(self.bn(self.conv(x))))
        return self.linear(nn.functional.adaptive_avg_pool2d(h, 1).flatten(1))


def test_max_pool_pads_with_minus_infinity() -> None:
    info = ModelInfo(spec="t", format="t", num_classes=4, input_shape=(3, 64, 64))
    model = RobustModel(PoolStem(), info)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(9))
    lf = local_forward_for(model)  # no fold: the batch norm is evaluated locally too
    assert lf is not None
    lf.set_base(x)
    assert float(lf.base[next(n for n in lf.nodes if n.name == "bn")].max()) < 0  # every value the pool sees is negative
    tops, lefts = [0, 0, 61, 61, 30], [0, 61, 0, 61, 2]
    xn, crop = _candidates(x, [0, 1, 0, 1, 0], tops, lefts, 3, seed=10)
    assert _rel(lf.logits(torch.tensor([0, 1, 0, 1, 0]), tops, lefts, crop), model(xn)) < 1e-5
    pool = next(n for n in lf.nodes if n.name == "pool")
    assert isinstance(lf.last[pool], _Box) and lf.last[pool].bh < 16  # the pool ran on its box only


class _OwnForward(RobustModel):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(1.0 - x)


class _AddsInPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        h.add_(1.0)
        return self.fc(h.mean((2, 3)))


class _Branches(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: does not trace
            return self.fc(x.mean((2, 3)))
        return -self.fc(x.mean((2, 3)))


def test_models_it_cannot_read_are_left_alone() -> None:
    info = ModelInfo(spec="t", format="t", num_classes=3, input_shape=(3, 8, 8))
    assert local_forward_for(_OwnForward(TinyResNet(classes=3), info)) is None
    assert local_forward_for(RobustModel(_AddsInPlace(), info)) is None
    assert local_forward_for(RobustModel(_Branches(), info)) is None
    assert local_forward_for(_model()) is not None


def _square_points(model: RobustModel, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        y = model(x).argmax(1)
    return x, y


def test_square_returns_the_same_points_with_and_without_local_evaluation(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model(seed=5)
    view = folded_view(model)
    x, y = _square_points(model)
    rows = {"local": 0}
    real = LocalForward.logits

    def counting(self: LocalForward, points: torch.Tensor, *a: object) -> torch.Tensor:
        rows["local"] += points.numel()
        return real(self, points, *a)  # type: ignore[arg-type]

    monkeypatch.setattr(LocalForward, "logits", counting)
    q = 900  # squares of 7 and 5 pixels from iteration 500 on: local from there
    with torch.no_grad():
        a = square_linf(view, x, y, 0.02, n_queries=q, seed=3, local_eval=True)
        b = square_linf(view, x, y, 0.02, n_queries=q, seed=3, local_eval=False)
        broken = model(a).argmax(1).ne(y)
    assert torch.equal(a, b)
    assert 0 < int(broken.sum()) < len(y)  # some points robust to the end: their late candidates went local
    assert rows["local"] >= 300, rows


def test_a_local_evaluation_that_disagrees_with_the_model_is_dropped(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    model = _model(seed=5)
    view = folded_view(model)
    x, y = _square_points(model)
    real = LocalForward.logits
    monkeypatch.setattr(LocalForward, "logits", lambda self, *a: real(self, *a) + 1.0 * torch.arange(5.0))  # a wrong reading
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="robustlab.attacks.square_local"):
        a = square_linf(view, x, y, 0.02, n_queries=900, seed=3, local_eval=True)
        b = square_linf(view, x, y, 0.02, n_queries=900, seed=3, local_eval=False)
    assert torch.equal(a, b)
    assert any("disagrees with the model" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("arch", ["resnet18", "vgg11_bn", "regnet_x_400mf", "shufflenet_v2_x0_5", "densenet121", "mobilenet_v2", "mnasnet0_5"])
def test_torchvision_architectures(arch: str) -> None:
    """Max-pool stems, grouped and depthwise convolutions, in-place ReLU6, eval-mode in-place dropout, channel shuffles and
    concatenations (random weights; nothing is downloaded):
    the logits are the network's, with at least the stem local."""
    import torchvision

    torch.manual_seed(0)
    net = getattr(torchvision.models, arch)(weights=None).eval()
    info = ModelInfo(spec="t", format="t", num_classes=1000, input_shape=(3, 64, 64), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    model = RobustModel(net, info)
    view = folded_view(model) or model
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        view(x)
    lf = local_forward_for(view)
    assert lf is not None
    lf.set_base(x)
    tops, lefts = [0, 0, 60, 60, 30], [0, 60, 0, 60, 9]
    xn, crop = _candidates(x, [0, 1, 0, 1, 0], tops, lefts, 4, seed=12)
    with torch.no_grad():
        assert _rel(lf.logits(torch.tensor([0, 1, 0, 1, 0]), tops, lefts, crop), model(xn)) < 1e-4
    assert sum(isinstance(v, _Box) for v in lf.last.values()) >= 2  # the input's box and at least the stem


def test_networks_with_hooks_are_left_alone() -> None:
    """A crop computed by ``F.conv2d`` skips a module's hooks, and a traced copy drops the root's: a network
    with hooks (here an activation clip on a convolution) is evaluated as it is."""
    model = _model()
    model.net.layers[0].conv1.register_forward_hook(lambda _m, _i, out: out.clamp(-0.05, 0.05))
    assert local_forward_for(model) is None
    model = _model()
    model.net.register_forward_pre_hook(lambda _m, args: (args[0] * 0.5,))
    assert local_forward_for(model) is None
