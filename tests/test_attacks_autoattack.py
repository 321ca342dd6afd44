"""AutoAttack: robustlab vs pyautoattack (the authors' code) with the same seed and data.

Tolerances: the ``reference`` engine must reproduce pyautoattack's robust flags exactly (same code,
same seed, same chunks). The ``fast`` engine replaces APGD's random start by per-sample seeds, so
its APGD trajectories differ from the reference's; its robust accuracy must agree within 2 points
of n on the digits model (in practice it agrees exactly). Our APGD, Square and batched FAB-T are
also compared step for step against the reference classes with the same starting points/seed:
the flags must agree exactly.
"""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from robustlab.attacks.apgd import APGD
from robustlab.attacks.autoattack import run_autoattack
from robustlab.attacks.base import Norm, norms
from robustlab.attacks.square import square_linf
from robustlab.models.wrapper import ModelInfo, RobustModel


pytestmark = pytest.mark.usefixtures("one_thread")  # attack loops: many small passes


def _pyautoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "Linf", seed: int = 0, bs: int = 500, n_iter: int = 100, queries: int = 5000) -> torch.Tensor:
    """Robust flags from calling pyautoattack directly (optionally with reduced budgets)."""
    from pyautoattack import AutoAttack

    a = AutoAttack(model, eps=eps, norm=norm, seed=seed, version="standard")
    a.logger.setLevel(logging.ERROR)
    if n_iter != 100:
        for at in (a.apgd, a.apgd_targeted):
            at.n_iter = n_iter
            at.n_iter_2, at.n_iter_min, at.size_decr = max(int(0.22 * n_iter), 1), max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)
        a.fab.n_iter = n_iter
    a.square.n_queries = queries
    xa, _ = a.run_standard_evaluation(x.contiguous(), y, batch_size=bs)
    with torch.no_grad():
        return model(xa).argmax(1).eq(y)


@pytest.fixture(scope="module")
def digits_xy(digits_data):
    return digits_data.x[:48], digits_data.y[:48]


def test_reference_engine_equals_pyautoattack_digits(digits_model, digits_xy) -> None:
    x, y = digits_xy[0][:32], digits_xy[1][:32]
    ref = _pyautoattack(digits_model, x, y, eps=0.1, seed=7, n_iter=30, queries=500)
    ours = run_autoattack(digits_model, x, y, eps=0.1, engine="reference", seed=7, n_iter=30, square_queries=500)
    assert torch.equal(ours.robust, ref)
    assert 0 < int(ref.sum()) < int(ours.clean_correct.sum())  # a non-trivial budget


def test_fast_engine_full_standard_matches_pyautoattack_digits(digits_model, digits_xy) -> None:
    """Full AutoAttack standard budgets (APGD 100 it., Square 5000 queries) on 32 digits."""
    x, y = digits_xy[0][:32], digits_xy[1][:32]
    ref = _pyautoattack(digits_model, x, y, eps=0.1, seed=0)
    ours = run_autoattack(digits_model, x, y, eps=0.1, engine="fast", seed=0)
    assert abs(int(ours.robust.sum()) - int(ref.sum())) <= 2
    assert set(ours.robust_after) == {"apgd-ce", "apgd-t", "fab-t", "square"}
    # cumulative worst case: flags only go from robust to non-robust
    prev = ours.clean_correct
    for a in ("apgd-ce", "apgd-t", "fab-t", "square"):
        assert not (ours.robust_after[a] & ~prev).any()
        prev = ours.robust_after[a]
    broken = ours.clean_correct & ~ours.robust
    assert float(norms(ours.x_adv - x, Norm.LINF)[broken].max()) <= 0.1 + 1e-6
    assert ours.rejected == 0


def test_apgd_flags_equal_reference_with_same_start(digits_model, digits_xy) -> None:
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

    x, y = digits_xy
    ok = digits_model(x).argmax(1).eq(y)
    x, y = x[ok], y[ok]
    for norm, eps, loss in (("Linf", 0.1, "ce"), ("L2", 0.5, "dlr-targeted")):
        torch.manual_seed(1)
        t = 2 * torch.rand(x.shape) - 1 if norm == "Linf" else torch.randn(x.shape)
        ref = APGDAttack(digits_model, n_iter=40, norm=norm, eps=eps, loss=loss, device="cpu") if loss == "ce" else APGDAttack_targeted(digits_model, n_iter=40, norm=norm, eps=eps, device="cpu")
        ref.init_hyperparam(x)
        x_init = (x + eps * ref.normalize(t)).clamp(0, 1)
        tg = None
        if loss == "dlr-targeted":
            tg = digits_model(x).sort(1)[1][:, -2]
            ref.y_target = tg
        _, acc, _, _ = ref.attack_single_run(x, y, x_init=x_init)
        ours = APGD(norm=norm, n_iter=40, loss=loss).run(digits_model, x, y, eps, seeds=list(range(len(y))), bounds=(0.0, 1.0), x_init=x_init, targets=tg)
        assert torch.equal(~acc, ours.success), (norm, loss)
        assert 0 < int(ours.success.sum()) < len(y)
        # early exit: broken points used fewer iterations than the budget
        assert float(ours.iterations[ours.success].float().median()) < 40


def test_square_and_batched_fab_equal_reference(digits_model, digits_data) -> None:
    x, y = digits_data.x[:32], digits_data.y[:32]
    for attack in (["square"], ["fab-t"]):
        kw = dict(eps=0.1, seed=3, attacks=attack, square_queries=200, n_iter=20)
        ref = run_autoattack(digits_model, x, y, engine="reference", **kw)
        fast = run_autoattack(digits_model, x, y, engine="fast", **kw)
        assert torch.equal(ref.robust, fast.robust), attack
        assert int(ref.robust.sum()) < int(ref.clean_correct.sum())  # the attack broke something


def test_square_linf_direct_equals_reference(digits_model, digits_data) -> None:
    from pyautoattack.square import SquareAttack

    x, y = digits_data.x[:24], digits_data.y[:24]
    ok = digits_model(x).argmax(1).eq(y)
    x, y = x[ok], y[ok]
    ref = SquareAttack(digits_model, p_init=0.8, n_queries=150, eps=0.1, norm="Linf", n_restarts=1, seed=5, device="cpu", resc_schedule=False)
    xr = ref.perturb(x, y)
    xo = square_linf(digits_model, x, y, 0.1, n_queries=150, seed=5)
    assert torch.equal(digits_model(xr).argmax(1).eq(y), digits_model(xo).argmax(1).eq(y))


def test_noncontiguous_inputs_workaround() -> None:
    """pyautoattack 0.2.0 crashes on non-contiguous inputs (grad = zeros_like(x) keeps the strides,
    then .view fails in check_zero_gradients / normalize); robustlab makes inputs contiguous."""
    from pyautoattack import AutoAttack

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 10, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()).eval()
    x = torch.rand(6, 8, 8, 3).permute(0, 3, 1, 2)  # NHWC data viewed as NCHW
    y = net(x).argmax(1)
    a = AutoAttack(net, eps=0.03, norm="L2", seed=0)
    a.logger.setLevel(logging.CRITICAL)
    a.apgd.n_iter = 5
    with pytest.raises(RuntimeError, match="view size"):
        a.run_standard_evaluation(x, y, batch_size=6)
    model = RobustModel(net, ModelInfo(spec="t", format="t", num_classes=10, input_shape=(3, 8, 8)))
    r = run_autoattack(model, x, y, eps=0.03, norm="l2", engine="reference", seed=0, n_iter=5, square_queries=20)
    assert r.robust.shape == (6,)


def test_non_unit_bounds_are_mapped_for_the_reference(digits_model, digits_data) -> None:
    """The reference clamps to [0, 1]; a model on [-1, 1] must give the same flags as the
    equivalent [0, 1] model (eps scaled by the range)."""
    x01, y = digits_data.x[:24], digits_data.y[:24]
    net = digits_model.net

    class Shift(nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return net((z + 1) / 2)

    m2 = RobustModel(Shift(), ModelInfo(spec="t", format="t", num_classes=10, input_shape=(1, 8, 8), bounds=(-1.0, 1.0)))
    kw = dict(engine="reference", seed=1, n_iter=20, square_queries=100)
    r1 = run_autoattack(digits_model, x01, y, eps=0.1, **kw)
    r2 = run_autoattack(m2, x01 * 2 - 1, y, eps=0.2, **kw)
    assert torch.equal(r1.robust, r2.robust)
    assert float(r2.x_adv.min()) >= -1 and float(r2.x_adv.max()) <= 1


@pytest.mark.slow
def test_cifar_resnet18_both_engines_equal_pyautoattack(cifar_model, cifar_data) -> None:
    """The real CIFAR-10 ResNet-18 on 8 shared test images at Linf 8/255, the full standard attack:
    both engines give pyautoattack's flags (APGD runs its 100 iterations on every image, so each
    of the three runs takes about 30 s on 2 cores)."""
    x, y = cifar_data.images(slice(0, 8)), cifar_data.y[:8]
    ref = _pyautoattack(cifar_model, x, y, eps=8 / 255, seed=0)
    for engine in ("reference", "fast"):
        ours = run_autoattack(cifar_model, x, y, eps=8 / 255, engine=engine, seed=0)
        assert torch.equal(ours.robust, ref), engine
        assert torch.equal(ours.clean_correct, cifar_model(x).argmax(1).eq(y))


@pytest.mark.slow
def test_square_skips_candidates_equal_to_their_best(digits_model, digits_data) -> None:
    """Late Square iterations change a 1x1 window often already at the drawn sign: such candidates
    equal the current best and are not evaluated: fewer forward rows, the reference's flags."""
    from pyautoattack.square import SquareAttack

    x, y = digits_data.x[:16], digits_data.y[:16]
    ok = digits_model(x).argmax(1).eq(y)
    x, y = x[ok], y[ok]

    class Counting(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rows = 0

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            self.rows += t.shape[0]
            return digits_model(t)

    counter = Counting()
    queries = 2100  # reaches the 1-pixel windows of the schedule (iteration > 2000)
    xo = square_linf(counter, x, y, 0.1, n_queries=queries, seed=2)
    ref = SquareAttack(digits_model, p_init=0.8, n_queries=queries, eps=0.1, norm="Linf", n_restarts=1, seed=2, device="cpu", resc_schedule=False)
    xr = ref.perturb(x, y)
    flags = digits_model(xo).argmax(1).eq(y)
    assert torch.equal(digits_model(xr).argmax(1).eq(y), flags)
    robust = int(flags.sum())
    assert robust > 0
    # without skipping, every robust point costs one row per iteration
    assert counter.rows < 0.97 * robust * queries, (counter.rows, robust * queries)
