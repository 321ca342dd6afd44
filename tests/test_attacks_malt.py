"""MALT: target ranking on a linear classifier (where the linearisation is exact), the attack
contract (ball, bounds, seeds), and the registered ``malt`` check."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab.attacks.apgd import APGD
from robustlab.attacks.base import ATTACKS, Norm, norms
from robustlab.attacks.malt import MALT, malt_targets
from robustlab.errors import SuiteError
from robustlab.models.wrapper import ModelInfo, RobustModel

from test_adversarial_checks import _ctx, _run


pytestmark = pytest.mark.usefixtures("one_thread")  # attack loops: many small passes


def linear_trap(n: int = 6) -> tuple[RobustModel, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Linear classifier on 16 inputs, 10 classes, x at the centre of [0, 1]^16. Classes 1..8 have the
    higher logits but steep, far boundaries; class 9 has the lowest logit but the nearest boundary
    (Linf distance (z_0 - z_9) / ||w_0 - w_9||_1), so top-logit targeting aims at the wrong classes."""
    d = 16
    w = torch.zeros(10, d)
    b = torch.zeros(10)
    b[0] = 1.0
    for c in range(1, 9):
        w[c, c - 1] = 1.0  # ||w_0 - w_c||_1 = 1, z_0 - z_c = 1 - 0.1 c: Linf distance >= 0.2 (and clipped by the box)
        b[c] = 0.1 * c - 0.5  # at x = 0.5: z_c = 0.1 c
    w[9] = 1.0  # ||w_0 - w_9||_1 = 16
    b[9] = -8.0 + 0.0  # at x = 0.5: z_9 = 0  ->  distance (1 - 0) / 16 = 0.0625
    net = nn.Linear(d, 10)
    with torch.no_grad():
        net.weight.copy_(w)
        net.bias.copy_(b)
    model = RobustModel(nn.Sequential(nn.Flatten(), net), ModelInfo(spec="t", format="t", num_classes=10, input_shape=(1, 4, 4)))
    x = torch.full((n, 1, 4, 4), 0.5)
    y = torch.zeros(n, dtype=torch.long)
    return model, x, y, torch.tensor(1.0 / 16)


def test_targets_ranked_by_linearised_distance() -> None:
    model, x, y, dist = linear_trap()
    t = malt_targets(model, x, y, norm=Norm.LINF, n_targets=3, candidates=100)
    assert t.shape == (6, 3)
    assert (t[:, 0] == 9).all()  # the nearest boundary, although class 9 has the lowest logit
    assert (t[:, 1] == 8).all() and (t[:, 2] == 7).all()  # then by (z_0 - z_c) / 1
    assert malt_targets(model, x, y, norm=Norm.LINF, n_targets=3, candidates=2).tolist() == [[8, 7]] * 6  # only the top-2 logits


def test_malt_breaks_what_top_logit_targeting_misses() -> None:
    model, x, y, dist = linear_trap()
    eps = float(dist) * 1.3
    seeds = list(range(6))
    xa = MALT(n_targets=1, apgd_ce=False, n_iter=20).perturb(model, x, y, eps, seeds=seeds)
    assert float(norms(xa - x, Norm.LINF).max()) <= eps + 1e-6
    assert (model(xa).argmax(1) == 9).all()
    # APGD-T on the highest-logit target (AutoAttack's first target) fails at this budget
    top = APGD(n_iter=20, loss="dlr-targeted", n_target_classes=1).run(model, x, y, eps, seeds=seeds, bounds=(0.0, 1.0))
    assert not top.success.any()
    # below the exact distance nothing can succeed (the model is linear)
    below = MALT(n_targets=3, n_iter=20).perturb(model, x, y, float(dist) * 0.9, seeds=seeds)
    assert (model(below).argmax(1) == 0).all()


@pytest.mark.parametrize("norm,eps", [(Norm.LINF, 0.1), (Norm.L2, 0.8)])
@pytest.mark.parametrize("bounds", [(0.0, 1.0), (-1.0, 2.0)])
def test_contract_ball_bounds_and_seeds(norm: Norm, eps: float, bounds: tuple[float, float]) -> None:
    g = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    m = RobustModel(net, ModelInfo(spec="test", format="test", num_classes=10, input_shape=(1, 8, 8), bounds=bounds))
    lo, hi = bounds
    x = lo + (hi - lo) * torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = m(x).argmax(1)
    attack = ATTACKS.get("malt")(norm=norm, n_iter=10)
    xa = attack.perturb(m, x, y, eps, seeds=list(range(16)))
    assert xa.shape == x.shape and torch.isfinite(xa).all()
    assert float(xa.min()) >= lo and float(xa.max()) <= hi
    assert float(norms(xa - x, norm).max()) <= eps * (1 + 1e-5) + 1e-6
    assert (m(xa).argmax(1) != y).any()
    assert torch.equal(xa, attack.perturb(m, x, y, eps, seeds=list(range(16))))
    with pytest.raises(SuiteError):
        MALT(n_targets=0)


def test_malt_check_on_digits(digits_model, digits_data) -> None:
    small = digits_data.limit(24)
    r = _run("malt", _ctx(digits_model, small), n_iter=10, n_targets=3, epsilons=[0.1], audit=False)
    m = r.metrics
    assert 0.0 <= m["adversarial/malt/robust_accuracy"] <= m["adversarial/malt/clean_accuracy"]
    assert m["adversarial/malt/robust_accuracy"] < m["adversarial/malt/clean_accuracy"]  # it breaks something at 0.1
    assert "MALT" in r.definitions["attack"]
    with pytest.raises(SuiteError, match="malt"):
        _run("malt", _ctx(digits_model, small), n_targets=0)
