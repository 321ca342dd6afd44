"""Square Attack's look-ahead: candidates of later iterations evaluated in one forward pass.

The squares of the Linf Square Attack do not depend on which candidates were accepted, so a point's
next ``d`` candidates can be built from its current best and evaluated together; the first accepted
one is kept and the later ones, built from a stale best, are thrown away. That must give exactly the
reference's sequence of best points. The model here computes each row on its own with elementwise
float64 operations, so a row's logits do not depend on which other rows share its batch, and the
comparison can be bit for bit, with the reference class (pyautoattack) too.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab.attacks.autoattack import run_autoattack
from robustlab.attacks.square import Square, _Depth, square_linf


class RowWise(nn.Module):
    """A small two-layer network written with elementwise products and per-row sums (float64):
    no matrix kernel whose blocking could depend on the batch size."""

    def __init__(self, shape: tuple[int, int, int] = (3, 8, 8), hidden: int = 6, classes: int = 4, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        d = shape[0] * shape[1] * shape[2]
        self.w1 = torch.randn(hidden, d, generator=g, dtype=torch.float64) / d**0.5 * 6
        self.w2 = torch.randn(classes, hidden, generator=g, dtype=torch.float64)
        self.calls = 0
        self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.rows += x.shape[0]
        v = x.reshape(x.shape[0], 1, -1).to(torch.float64)
        h = torch.relu((v * self.w1).sum(-1) - 0.5 * self.w1.sum(-1) / 2)
        return ((h.unsqueeze(1) * self.w2).sum(-1)).to(torch.float32)


pytestmark = pytest.mark.usefixtures("one_thread")  # attack loops: many small passes


def _points(model: nn.Module, n: int = 40, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=g)
    y = model(x).argmax(1)  # every point correct: all are attacked
    return x, y


def test_every_depth_gives_the_same_points_as_one_candidate_at_a_time() -> None:
    model = RowWise()
    x, y = _points(model, n=24)
    eps, q = 0.04, 300
    base = square_linf(model, x, y, eps, n_queries=q, seed=4, depth=1)
    flags = model(base).argmax(1).eq(y)
    assert 0 < int(flags.sum()) < len(y)  # some points broken, some still robust: both paths exercised
    for depth in (2, 3, 8, 33):
        assert torch.equal(square_linf(model, x, y, eps, n_queries=q, seed=4, depth=depth), base), depth
    for max_rows in (1, 7, 500):  # depth chosen by measured speed, within the row budget
        assert torch.equal(square_linf(model, x, y, eps, n_queries=q, seed=4, max_rows=max_rows), base), max_rows


def test_lookahead_equals_the_reference_bit_for_bit() -> None:
    from pyautoattack.square import SquareAttack

    model = RowWise(seed=3)
    x, y = _points(model, n=24, seed=2)
    eps, q = 0.04, 300
    ref = SquareAttack(model, p_init=0.8, n_queries=q, eps=eps, norm="Linf", n_restarts=1, seed=7, device="cpu", resc_schedule=False)
    with torch.random.fork_rng():
        xr = ref.perturb(x, y)
    broken = model(xr).argmax(1).ne(y)
    assert 0 < int(broken.sum()) < len(y)
    for depth in (None, 1, 5):
        xo = square_linf(model, x, y, eps, n_queries=q, seed=7, depth=depth, max_rows=128)
        assert torch.equal(model(xo).argmax(1).ne(y), broken), depth
        # the reference returns the clean point where it failed, its adversarial point where it succeeded
        assert torch.equal(xo[broken], xr[broken]), depth


def test_lookahead_needs_fewer_forward_passes() -> None:
    model = RowWise(seed=5)
    x, y = _points(model, n=8, seed=3)
    q = 600
    one = RowWise(seed=5)
    square_linf(one, x, y, 0.02, n_queries=q, seed=1, depth=1)
    deep = RowWise(seed=5)
    square_linf(deep, x, y, 0.02, n_queries=q, seed=1, depth=8, max_rows=64)
    assert one.calls > 0.9 * q  # robust points: about one pass per iteration
    assert deep.calls < 0.3 * one.calls, (deep.calls, one.calls)
    assert deep.rows <= 64 * deep.calls


def test_depth_follows_the_measured_cost() -> None:
    cheap_deep = _Depth(max_rows=64)
    for _ in range(200):
        level = cheap_deep.choose(4)
        # seconds per iteration advanced halve with every level (a launch-bound device)
        cheap_deep.record(level, seconds=1.0, advanced=4 * (1 << level))
    assert cheap_deep.level == 4  # 64 rows // 4 points = depth 16, the cap
    costly_deep = _Depth(max_rows=64)
    for _ in range(200):
        level = costly_deep.choose(4)
        costly_deep.record(level, seconds=1.0 * (1 << level) * (1 + 0.2 * level), advanced=4 * (1 << level))
    assert costly_deep.level == 0
    assert _Depth(max_rows=64).choose(1000) == 0  # more points than rows: one candidate each


def test_on_a_convolutional_model_the_depth_and_row_budget_do_not_change_the_result(digits_model, digits_data) -> None:
    """Convolutions here give last bits that depend on the batch size, so a candidate whose margin ties
    with its best's could be kept or dropped depending on the rows beside it; such ties are settled on
    margins evaluated alone. Every depth, every row budget and two runs of the speed-chosen depth give
    the same points (before, depths 3 and 8 gave other points than depth 1 at 2500 queries)."""
    x, y = digits_data.x[:24], digits_data.y[:24]
    ok = digits_model(x).argmax(1).eq(y)
    x, y = x[ok], y[ok]
    q = 1200
    base = square_linf(digits_model, x, y, 0.1, n_queries=q, seed=3, depth=1)
    assert 0 < int(digits_model(base).argmax(1).eq(y).sum()) < len(y)
    for depth in (3, 8):
        assert torch.equal(square_linf(digits_model, x, y, 0.1, n_queries=q, seed=3, depth=depth), base), depth
    for max_rows in (5, 64, 64):
        assert torch.equal(square_linf(digits_model, x, y, 0.1, n_queries=q, seed=3, max_rows=max_rows), base), max_rows


def test_autoattack_square_gets_the_batch_size_as_its_row_budget() -> None:
    from robustlab.attacks.autoattack import AAVersion, members
    from robustlab.attacks.threat import Norm

    sq = members(AAVersion.STANDARD, norm=Norm.LINF, n_iter=10, square_queries=10, seed=0, num_classes=10, batch_size=300)["square"]
    assert isinstance(sq, Square) and sq.max_rows == 300
    with pytest.raises(Exception, match="max_rows"):
        Square(max_rows=0)


def test_autoattack_flags_do_not_depend_on_the_row_budget() -> None:
    from robustlab.models.wrapper import ModelInfo, RobustModel

    model = RobustModel(RowWise(seed=6), ModelInfo(spec="t", format="t", num_classes=4, input_shape=(3, 8, 8)))
    x, y = _points(model, n=20, seed=4)
    kw = dict(eps=0.03, attacks=["square"], square_queries=300, seed=2)
    a = run_autoattack(model, x, y, batch_size=20, **kw)  # type: ignore[arg-type]
    b = run_autoattack(model, x, y, batch_size=200, **kw)  # type: ignore[arg-type]
    assert torch.equal(a.robust, b.robust) and torch.equal(a.x_adv, b.x_adv)
    assert 0 < int(a.robust.sum()) < 20


class Recorder(nn.Module):
    """Records the rows of every forward pass of a model."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.passes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.passes.append(x.shape[0])
        return self.net(x)


def test_tie_width_starts_wide_narrows_only_after_its_warm_up_and_widens_at_once() -> None:
    from robustlab.attacks.square import TIE, _TieWidth

    t = _TieWidth()
    assert t.width == TIE
    t.observe(torch.full((_TieWidth.WARMUP - 1,), 1e-8))
    assert t.width == TIE  # too few measurements to narrow
    t.observe(torch.tensor([2e-7]))
    assert t.width == pytest.approx(max(_TieWidth.FLOOR, _TieWidth.SAFETY * 2e-7))
    t.observe(torch.tensor([1e-6]))
    assert t.width == pytest.approx(_TieWidth.SAFETY * 1e-6)
    t.observe(torch.zeros(0))
    assert t.width == pytest.approx(_TieWidth.SAFETY * 1e-6)
    w = _TieWidth()
    w.observe(torch.tensor([2e-5]))  # one rounding larger than the start allows: wider at once
    assert w.width == pytest.approx(_TieWidth.SAFETY * 2e-5)
    w.observe(torch.tensor([1.0]))
    assert w.width == _TieWidth.CAP
    f = _TieWidth(3e-4)  # a fixed width never moves
    f.observe(torch.full((100,), 1e-9))
    f.observe(torch.tensor([1.0]))
    assert f.width == 3e-4


def test_a_tie_in_a_pass_of_one_row_is_not_evaluated_again(digits_model, digits_data, monkeypatch) -> None:
    """With one point and one candidate per pass every pass is a pass alone, so a tie is settled on the
    margin already computed: a wide tie width (many decisions are ties) costs no forward pass more than
    no ties at all, and gives the same points (before, each tie was evaluated a second time)."""
    import robustlab.attacks.square as sq

    x, y = digits_data.x[:24], digits_data.y[:24]
    ok = digits_model(x).argmax(1).eq(y)
    x, y = x[ok][:1], y[ok][:1]
    runs = {}
    for tie in (0.0, 0.3):
        monkeypatch.setattr(sq, "TIE", tie)
        model = Recorder(digits_model)
        runs[tie] = (square_linf(model, x, y, 0.1, n_queries=400, seed=3, depth=1), model.passes)
    assert set(runs[0.3][1]) == {1} and len(runs[0.3][1]) > 100
    assert len(runs[0.3][1]) == len(runs[0.0][1])
    assert torch.equal(runs[0.3][0], runs[0.0][0])


class SmoothConv(nn.Module):
    """A small float32 convolutional network with smooth activations: a pixel change moves the margin
    by a continuous amount, so near-ties come in every size."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.Tanh(), nn.Conv2d(16, 16, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(16 * 8 * 8, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def test_the_calibrated_tie_width_settles_fewer_decisions_alone_and_keeps_the_points() -> None:
    """The run measures its own rounding on its ties and narrows the tie width to 16x the largest (at
    least 1e-5): fewer one-row passes than the fixed starting width, and the same points at every depth
    (the width decides how many decisions are taken alone, not how they come out)."""
    import robustlab.attacks.square as sq

    net = SmoothConv(seed=2).eval()
    x, y = _points(net, n=6, seed=5)
    eps, q = 0.03, 1500
    calibrated = Recorder(net)
    got = square_linf(calibrated, x, y, eps, n_queries=q, seed=3, depth=4)
    fixed = Recorder(net)
    want = square_linf(fixed, x, y, eps, n_queries=q, seed=3, depth=4, tie_width=sq.TIE)
    assert torch.equal(got, want)
    for depth in (1, 7):
        assert torch.equal(square_linf(net, x, y, eps, n_queries=q, seed=3, depth=depth), got), depth
    alone_calibrated, alone_fixed = calibrated.passes.count(1), fixed.passes.count(1)
    assert alone_fixed > 50, alone_fixed  # ties do happen at the starting width
    assert alone_calibrated < 0.6 * alone_fixed, (alone_calibrated, alone_fixed)
