"""Peak memory follows the batch size (issue 21): attacks that stack one copy of a point per target
class (APGD-T, FAB-T) never run more model rows at once than the caller's batch, and chunking the
points does not change which points are broken."""

from __future__ import annotations

import torch
from torch import nn

from robustlab.attacks.apgd_attacks import APGDT
from robustlab.attacks.autoattack import run_autoattack
from robustlab.attacks.fab import FABT


class RowCounter(nn.Module):
    """A 10-class linear model on 3x4x4 inputs that records the largest batch it was given."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(48, 10))
        self.max_rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.max_rows = max(self.max_rows, int(x.shape[0]))
        return self.net(x)


def _data(n: int, model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand(n, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)  # every point clean-correct, so every point is attacked
    return x, y


def test_autoattack_stacked_members_stay_within_the_batch() -> None:
    m = RowCounter()
    x, y = _data(40, m)
    m.max_rows = 0
    # an epsilon too small to break anything: all 40 points reach APGD-T (9 targets) and FAB-T
    r = run_autoattack(m, x, y, eps=1e-6, batch_size=16, bounds=(0.0, 1.0), n_iter=3, square_queries=3, seed=0)
    assert bool(r.robust.all())
    assert m.max_rows <= 16, f"a call ran {m.max_rows} rows with batch_size 16 (9 stacked targets per point)"


def test_perturb_of_a_stacking_attack_stays_within_the_points_given() -> None:
    m = RowCounter()
    x, y = _data(18, m)
    for attack in (APGDT(n_iter=3), FABT(n_iter=3)):
        m.max_rows = 0
        attack.perturb(m, x, y, 1e-6, bounds=(0.0, 1.0))
        assert m.max_rows <= 18, f"{type(attack).__name__}: {m.max_rows} rows at once for 18 points"


def test_chunking_does_not_change_the_flags() -> None:
    m = RowCounter()
    x, y = _data(30, m)
    eps = 0.08  # some points break, some do not, found by different members
    a = run_autoattack(m, x, y, eps=eps, batch_size=300, bounds=(0.0, 1.0), n_iter=10, square_queries=20, seed=3)
    b = run_autoattack(m, x, y, eps=eps, batch_size=10, bounds=(0.0, 1.0), n_iter=10, square_queries=20, seed=3)
    assert 0 < int(a.robust.sum()) < 30, a.fooled_by
    assert torch.equal(a.robust, b.robust)
    assert {k: v.tolist() for k, v in a.robust_after.items()} == {k: v.tolist() for k, v in b.robust_after.items()}


def test_apgd_early_exit_keeps_bucket_sizes_and_changes_no_result() -> None:
    """Early exit shrinks APGD's state to bucket sizes only (a few sizes per octave, so the C heap
    reuses its blocks), and the result is that of running every point to the end."""
    from robustlab.attacks.apgd import APGD
    from robustlab.buckets import bucket_size

    m = RowCounter()
    x, y = _data(60, m)
    sizes: list[int] = []
    m.register_forward_hook(lambda _m, inp, _out: sizes.append(int(inp[0].shape[0])) if inp[0].requires_grad else None)
    seeds = list(range(60))
    for loss in ("ce", "dlr-targeted"):
        sizes.clear()
        eng = APGD(n_iter=30, loss=loss, n_target_classes=3)
        fast = eng.run(m, x, y, 0.06, seeds=seeds, bounds=(0.0, 1.0), early_exit=True)
        assert 5 < int(fast.success.sum()) < 55  # points break at different iterations, some never
        odd = sorted({s for s in sizes if s != sizes[0] and bucket_size(s) != s})  # the first: all rows
        assert not odd, f"{loss}: gradient passes on sizes that are not bucket sizes: {odd}"
        full = eng.run(m, x, y, 0.06, seeds=seeds, bounds=(0.0, 1.0), early_exit=False)
        assert torch.equal(fast.success, full.success) and torch.equal(fast.x_adv, full.x_adv)
        assert torch.equal(fast.iterations, full.iterations)


def test_pgd_early_stop_keeps_bucket_sizes_and_changes_no_result() -> None:
    from robustlab.attacks.pgd import PGD
    from robustlab.buckets import bucket_size

    m = RowCounter()
    x, y = _data(60, m)
    sizes: list[int] = []
    m.register_forward_hook(lambda _m, inp, _out: sizes.append(int(inp[0].shape[0])) if inp[0].requires_grad else None)
    seeds = list(range(60))
    attack = PGD(steps=30, restarts=2)
    fast = attack.run(m, x, y, 0.05, seeds=seeds, early_stop=True, targeted=False, bounds=(0.0, 1.0))
    odd = sorted({s for s in sizes if s != 60 and bucket_size(s) != s})  # 60: all rows, at the start
    broken = m(fast).argmax(1).ne(y)
    assert 5 < int(broken.sum()) < 55
    assert not odd, f"gradient passes on sizes that are not bucket sizes: {odd}"
    # each point's result is that of running it alone: the rows kept as filler change nothing
    alone = torch.cat([attack.run(m, x[i : i + 1], y[i : i + 1], 0.05, seeds=seeds[i : i + 1], early_stop=True, targeted=False, bounds=(0.0, 1.0)) for i in range(60)])
    assert torch.allclose(fast, alone, atol=1e-6)
