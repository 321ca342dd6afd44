"""Attacks on models with fewer than four classes (binary and three-class classifiers).

Croce & Hein's DLR loss divides by z_pi1 - z_pi3 and its targeted form by z_pi1 - (z_pi3 + z_pi4) / 2: the
untargeted form needs three classes, the targeted one four. With fewer, robustlab's losses fall back to their
numerators, the logit margins (max_{j!=y} z_j - z_y; z_t - z_y), which keep the direction DLR climbs: a
denominator such as z_max - z_min would make the ratio a constant +-1 on a binary model, a zero gradient,
and the attack would report robustness it never tested.

On a linear classifier z = W x + b the smallest Linf perturbation reaching class t from class y is
(z_y - z_t) / ||w_y - w_t||_1 (the box [0, 1] does not bind for points near 0.5), so every attack must break
exactly the points whose distance to some other class is below eps.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustlab.attacks.base import ATTACKS
from robustlab.attacks.geometry import attack_loss
from robustlab.attacks.threat import Loss
from robustlab.attacks.verified import verified_perturb
from robustlab.models.wrapper import ModelInfo, RobustModel

pytestmark = pytest.mark.usefixtures("one_thread")

def _linear(k: int, seed: int) -> tuple[RobustModel, torch.Tensor, torch.Tensor, float, torch.Tensor]:
    """A linear model of ``k`` classes on 1x4x4 inputs, 48 points near 0.5, their predicted labels, an eps
    (the median distance to another class, at most 0.1), and whether each point has another class within
    eps (points within 5% of eps of it are dropped)."""
    g = torch.Generator().manual_seed(seed)
    lin = nn.Linear(16, k)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(k, 16, generator=g))
        lin.bias.zero_()
    model = RobustModel(nn.Sequential(nn.Flatten(), lin).eval(), ModelInfo(spec="t", format="t", num_classes=k, input_shape=(1, 4, 4)))
    x = 0.5 + 0.08 * (torch.rand(200, 1, 4, 4, generator=g) * 2 - 1)
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)
    w = lin.weight.detach()
    dist = torch.full((200, k), float("inf"))
    for t in range(k):
        d = (z.gather(1, y[:, None])[:, 0] - z[:, t]) / (w[y] - w[t]).abs().sum(1)
        dist[:, t] = torch.where(y == t, torch.full_like(d, float("inf")), d)
    near = dist.min(1).values
    eps = min(float(near.median()), 0.1)
    keep = ((near - eps).abs() > 0.05 * eps).nonzero()[:, 0][:48]
    return model, x[keep], y[keep], eps, near[keep] < eps


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("name", ["apgd-t", "apgd-dlr", "malt", "autoattack"])
def test_attacks_break_exactly_the_points_within_eps(name: str, k: int) -> None:
    model, x, y, eps, within = _linear(k, seed=10 + k)
    assert 8 <= int(within.sum()) <= 40  # both kinds of points present
    kw = {"n_iter": 20} if name != "autoattack" else {"n_iter": 20, "square_queries": 50}
    attack = ATTACKS.get(name)(**{a: v for a, v in kw.items() if a in ATTACKS.get(name).hyperparameters()})
    r = verified_perturb(attack, model, x, y, eps, seeds=list(range(len(y))), bounds=(0.0, 1.0))
    broken = r.correct & r.check.valid
    assert torch.equal(broken, within), (name, k, int(broken.sum()), int(within.sum()))


@pytest.mark.parametrize("k", [2, 3])
def test_dlr_losses_with_few_classes_are_the_margins(k: int) -> None:
    z = torch.randn(6, k, generator=torch.Generator().manual_seed(k), requires_grad=True)
    y = torch.zeros(6, dtype=torch.long)
    t = torch.full((6,), k - 1, dtype=torch.long)
    other = z.detach().clone()
    other[:, 0] = -float("inf")
    assert torch.allclose(attack_loss(z, y, Loss.DLR_TARGETED, target=t), z[:, k - 1] - z[:, 0])
    assert torch.allclose(attack_loss(z, t, Loss.DLR, targeted=True), z[:, k - 1] - z[:, :k - 1].amax(1))
    if k == 2:
        assert torch.allclose(attack_loss(z, y, Loss.DLR), other.amax(1) - z[:, 0])
    grad = torch.autograd.grad(attack_loss(z, y, Loss.DLR_TARGETED, target=t).sum(), z)[0]
    assert bool((grad.abs().sum(1) > 0.5).all())  # a gradient to climb


def test_the_reference_engine_refuses_too_few_classes_in_one_line() -> None:
    from robustlab.attacks.autoattack import run_autoattack
    from robustlab.errors import SuiteError

    model, x, y, eps, _ = _linear(3, seed=13)
    with pytest.raises(SuiteError, match=r"apgd-t needs at least 4 classes .* the model has 3; use engine: fast"):
        run_autoattack(model, x[:4], y[:4], eps=eps, engine="reference", n_iter=5, square_queries=10)


@pytest.mark.integration
def test_evaluate_autoattack_on_a_binary_model_states_the_loss(tmp_path) -> None:
    """Through the command: a binary classifier's AutoAttack runs, and the scorecard says which loss APGD-T used."""
    import json
    import subprocess
    import sys

    import numpy as np

    model, x, y, eps, _ = _linear(2, seed=12)
    torch.save(model.net, tmp_path / "bin.pt")
    np.savez(tmp_path / "bin.npz", x=x[:24].numpy(), y=y[:24].numpy())
    (tmp_path / "s.yaml").write_text(f"name: s\nchecks:\n  - check: autoattack\n    params: {{epsilons: [{eps}], n_iter: 10, square_queries: 20}}\n")
    r = subprocess.run([sys.executable, "-m", "robustlab", "evaluate", "--model", str(tmp_path / "bin.pt"), "--trust-code", "--data", f"npz:{tmp_path / 'bin.npz'}",
                        "--suite", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "out"), "--no-mlflow", "--quiet"], capture_output=True, text=True, timeout=600)
    assert r.returncode in (0, 3), r.stderr[-2000:]  # 3: the convergence audit may call 10 iterations suspect
    card = json.loads((tmp_path / "out" / "scorecard.json").read_text())
    check = card["checks"][0]
    assert check["status"] == "ok"
    assert any("2 classes and apgd-t's DLR loss needs 4" in n and "logit margin" in n for n in check["notes"])
