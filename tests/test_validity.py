"""Issue 12, "numbers that hold": each test here fails on the code before its fix.

- bf16: clean flags and re-checks come from the fp32 model (PGD/FGSM and AutoAttack), flips are
  counted and re-attacked in fp32;
- the convergence audit scales to the whole robust set and can fail on large test sets;
- per-epsilon figures (norms, AutoAttack ``after=`` flags, black-box audit) follow the merged flags;
- batched FAB-T keeps one target per copy;
- audits that can fire (fp32 clean flags; DLR-based gradients, CE zeros only a note);
- certification in the model's input scale.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import numpy as np
import pytest
import torch
from torch import nn

from robustlab.checks import CHECKS, RunContext
from robustlab.data import Dataset
from robustlab.models.wrapper import ModelInfo, RobustModel
from robustlab.scorecard import Verdict
from robustlab.store import ResultStore


pytestmark = pytest.mark.usefixtures("one_thread")  # attack loops: many small passes


def _ctx(model: Any, data: Any, *, fast_model: Any = None, batch_size: int = 64) -> RunContext:
    return RunContext(
        model=model, data=data, seed=0, batch_size=batch_size, device=torch.device("cpu"), out_dir=Path("."),
        store=ResultStore(None, {}), load_data=lambda *a, **k: data, progress=lambda it, total=None, desc="": it, fast_model=fast_model,
    )


def _run(name: str, ctx: RunContext, **params: Any):
    cls = CHECKS.get(name)
    return cls(id=name, params=cls.parse_params(params)).run(ctx)


def _item(r: Any, name: str):
    return next(a for a in r.audit if a.name.startswith(name))


class _NearBoundaryView(nn.Module):
    """A low-precision stand-in whose decision differs from fp32 near the boundary: the top logit is
    lowered by ``delta``, so wherever the fp32 margin is below ``delta`` the view predicts the
    runner-up (as bf16 round-off does, deterministically and more often)."""

    def __init__(self, model: RobustModel, delta: float) -> None:
        super().__init__()
        self.model = model
        self.delta = delta

    @property
    def bounds(self) -> tuple[float, float]:
        return self.model.bounds

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x)
        return z - self.delta * nn.functional.one_hot(z.detach().argmax(1), z.shape[1]).to(z.dtype)


@pytest.fixture(scope="module")
def small(digits_data):
    return digits_data.limit(48)


def _margins(model: RobustModel, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        top2 = model(x).topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


@pytest.fixture(scope="module")
def view_and_delta(digits_model, small):
    """A delta for which some clean-correct points are misclassified by the view (as bf16 may)."""
    m = _margins(digits_model, small.x)
    delta = float(m.quantile(0.2))
    return _NearBoundaryView(digits_model, delta), delta


# -- items 3 and 4: bf16 flips and clean errors of the view -------------------------------------


def test_pgd_under_low_precision_view_decides_in_fp32(digits_model, small, view_and_delta) -> None:
    view, _ = view_and_delta
    params = dict(steps=10, epsilons=[0.1], audit=False)
    r32 = _run("pgd", _ctx(digits_model, small), **params)
    rv = _run("pgd", _ctx(digits_model, small, fast_model=view), **params)
    flags32 = np.asarray(r32.per_sample["robust/eps_0.1"])
    flagsv = np.asarray(rv.per_sample["robust/eps_0.1"])
    assert rv.per_sample["clean_correct"] == r32.per_sample["clean_correct"]
    # points only the view misclassifies are attacked (item 4), not counted robust
    with torch.no_grad():
        view_wrong = view(small.x).argmax(1).ne(small.y).numpy()
    only_view = view_wrong & np.asarray(r32.per_sample["clean_correct"])
    assert only_view.any() and not flags32[only_view].all()
    np.testing.assert_array_equal(flagsv[only_view], flags32[only_view])
    # flips are counted (item 3) and bf16 does not make robust accuracy optimistic
    assert rv.metrics["adversarial/pgd/bf16_flipped"] >= only_view.sum() > 0
    assert rv.metrics["adversarial/pgd/robust_accuracy"] <= r32.metrics["adversarial/pgd/robust_accuracy"]


def test_fgsm_under_low_precision_view_counts_flips(digits_model, small, view_and_delta) -> None:
    view, _ = view_and_delta
    r32 = _run("fgsm", _ctx(digits_model, small), epsilons=[0.1], audit=False)
    rv = _run("fgsm", _ctx(digits_model, small, fast_model=view), epsilons=[0.1], audit=False)
    assert rv.metrics["adversarial/fgsm/bf16_flipped"] > 0
    assert rv.metrics["adversarial/fgsm/robust_accuracy"] <= r32.metrics["adversarial/fgsm/robust_accuracy"]


def test_autoattack_under_low_precision_view_uses_fp32_clean_flags_and_recheck(digits_model, small, view_and_delta) -> None:
    """Item 2 (and 3 for AutoAttack): clean flags from fp32, flips counted and re-attacked in fp32."""
    view, _ = view_and_delta
    data = small.limit(24)
    params = dict(n_iter=10, square_queries=100, audit=False)
    r32 = _run("autoattack", _ctx(digits_model, data), **params)
    rv = _run("autoattack", _ctx(digits_model, data, fast_model=view), **params)
    with torch.no_grad():
        fp32_correct = digits_model(data.x).argmax(1).eq(data.y).tolist()
    assert rv.per_sample["clean_correct"] == fp32_correct
    assert rv.metrics["adversarial/autoattack/clean_accuracy"] == pytest.approx(sum(fp32_correct) / len(data))
    assert rv.metrics["adversarial/autoattack/bf16_flipped"] > 0
    assert rv.metrics["adversarial/autoattack/robust_accuracy"] <= r32.metrics["adversarial/autoattack/robust_accuracy"]


# -- item 5: convergence audit on a large set ----------------------------------------------------


def test_convergence_audit_flags_weak_attack_on_large_set(digits_model, digits_data) -> None:
    reps = math.ceil(6400 / len(digits_data))
    n = reps * len(digits_data)
    big = Dataset(spec="digits-x", split="test", ids=[f"r{k}/{i}" for k in range(reps) for i in digits_data.ids], y=digits_data.y.repeat(reps),
                  classes=digits_data.classes, x=digits_data.x.repeat(reps, 1, 1, 1))
    assert n >= 6400
    r = _run("fgsm", _ctx(digits_model, big, batch_size=2048), epsilons=[0.1], audit_samples=64)
    conv = _item(r, "convergence")
    assert conv.verdict is Verdict.SUSPECT, conv.message
    ev = conv.evidence
    assert ev["robust_points"] > ev["robust_points_rechecked"] == 64
    low, high = ev["accuracy_drop_interval"]
    assert low <= ev["accuracy_drop_estimate"] <= high and low > 0.01


def test_convergence_audit_estimate_scales_to_robust_set() -> None:
    from robustlab.audit.adversarial import audit_convergence

    a = audit_convergence(name="c", n_total=10000, n_robust=5000, n_tested=64, broken_by_stronger=8)
    assert a.verdict is Verdict.SUSPECT
    assert a.evidence["accuracy_drop_estimate"] == pytest.approx(8 / 64 * 0.5)
    exact = audit_convergence(name="c", n_total=100, n_robust=40, n_tested=40, broken_by_stronger=0)
    assert exact.verdict is Verdict.VALID and exact.evidence["accuracy_drop_interval"] == [0.0, 0.0]


# -- item 6: per-epsilon figures follow the merged flags -----------------------------------------


def test_sweep_norms_follow_merged_flags(digits_model, small, monkeypatch) -> None:
    """An attack that breaks points at the small epsilon and nothing at the large one."""
    import robustlab.checks.adversarial as adv
    from robustlab.attacks.pgd import PGD

    class OnlySmall(PGD):
        def run(self, model, x, y, eps, **kw):  # type: ignore[no-untyped-def, override]
            return super().run(model, x, y, eps, **kw) if eps < 0.15 else x.clone()

    monkeypatch.setattr(adv, "PGD", OnlySmall)
    r = _run("pgd", _ctx(digits_model, small), steps=10, epsilons=[0.1, 0.3], audit=False)
    m = r.metrics
    assert all(math.isfinite(v) for v in m.values()), {k: v for k, v in m.items() if not math.isfinite(v)}
    assert r.per_sample["robust/eps_0.3"] == r.per_sample["robust/eps_0.1"]
    assert m["adversarial/pgd/eps_0.1/robust_accuracy"] < m["adversarial/pgd/clean_accuracy"]
    for stat in ("mean_norm", "max_norm", "median_norm"):
        assert m[f"adversarial/pgd/eps_0.3/perturbation/{stat}"] == pytest.approx(m[f"adversarial/pgd/eps_0.1/perturbation/{stat}"])


def test_autoattack_after_flags_and_black_box_follow_merged_flags(digits_model, small, monkeypatch) -> None:
    import robustlab.checks.adversarial as adv
    from robustlab.attacks.autoattack import AutoAttackResult

    real = adv.run_autoattack

    def only_small(model, x, y, *, eps, **kw):  # type: ignore[no-untyped-def]
        r = real(model, x, y, eps=eps, **kw)
        if eps < 0.15:
            return r
        c = r.clean_correct
        return AutoAttackResult(x_adv=x.clone(), clean_correct=c, robust=c.clone(), robust_after={a: c.clone() for a in r.robust_after},
                                fooled_by=["" if b else "clean" for b in c.tolist()], claimed=0, rejected=0)

    monkeypatch.setattr(adv, "run_autoattack", only_small)
    data = small.limit(24)
    r = _run("autoattack", _ctx(digits_model, data), epsilons=[0.1, 0.3], n_iter=10, square_queries=100, audit_samples=8)
    m = r.metrics
    for e in ("0.1", "0.3"):
        ra = m[f"adversarial/autoattack/eps_{e}/robust_accuracy"]
        assert m[f"adversarial/autoattack/eps_{e}/after_square/robust_accuracy"] == pytest.approx(ra)
        afters = [m[f"adversarial/autoattack/eps_{e}/after_{a}/robust_accuracy"] for a in ("apgd-ce", "apgd-t", "fab-t", "square")]
        assert all(a >= b for a, b in zip(afters, afters[1:]))
    assert m["adversarial/autoattack/eps_0.3/after_apgd-ce/robust_accuracy"] == pytest.approx(m["adversarial/autoattack/eps_0.1/after_apgd-ce/robust_accuracy"])
    assert r.per_sample["fooled_by/eps_0.3"] == r.per_sample["fooled_by/eps_0.1"]
    assert all(math.isfinite(v) for v in m.values())
    bb = _item(r, "black_box_beats_white_box/eps_0.3")
    assert bb.evidence["robust_after_black_box"] <= bb.evidence["robust_after_white_box"]


# -- item 7: batched FAB-T, one target per copy ------------------------------------------------


def test_batched_fab_t_maps_targets_per_copy(digits_model, small, monkeypatch) -> None:
    from pyautoattack.fab_pt import FABAttack_PT

    from robustlab.attacks.base import Norm
    from robustlab.attacks.fab import _reference_fab_batched, fab_t_batched

    x = small.x[:4].contiguous()
    with torch.no_grad():
        logits = digits_model(x)
    y = logits.argmax(1).clone()
    y[1] = logits[1].argsort()[0]  # FAB's own clean check drops every copy of point 1
    fab = _reference_fab_batched()(digits_model, n_restarts=1, n_iter=2, eps=0.1, seed=0, norm="Linf", verbose=False, device=torch.device("cpu"), n_target_classes=3)
    seen: list[tuple[int, list[int]]] = []
    orig = FABAttack_PT.get_diff_logits_grads_batch_targeted

    def spy(self, imgs, la, la_target):  # type: ignore[no-untyped-def]
        seen.append((imgs.shape[0], la_target.tolist()))
        return orig(self, imgs, la, la_target)

    monkeypatch.setattr(FABAttack_PT, "get_diff_logits_grads_batch_targeted", spy)
    fab_t_batched(fab, digits_model, x, y, 0.1, Norm.LINF)
    order = logits.sort(dim=1)[1]
    kept = [i for i in range(4) if i != 1]
    expected = [int(order[i, -tc]) for tc in range(2, 5) for i in kept]
    assert seen and seen[0] == (len(expected), expected)


# -- item 8: audits that can fire ------------------------------------------------------------------


class _Overconfident(nn.Module):
    """An honest model with huge logits: softmax saturates, CE gradients are exactly 0, DLR's are not."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 1e4 * self.net(x)


class _BatchDependent(nn.Module):
    """Predicts class 0 for every point of a batch of more than one (a broken, batch-dependent model)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net(x)
        if x.shape[0] > 1:
            z = z + 1e3 * nn.functional.one_hot(torch.zeros(x.shape[0], dtype=torch.long, device=x.device), z.shape[1]).to(z.dtype)
        return z


def test_gradient_audit_follows_dlr_and_notes_ce_zeros(digits_model, small) -> None:
    from robustlab.audit.adversarial import audit_gradients

    m = RobustModel(_Overconfident(digits_model.net), digits_model.info)
    with torch.no_grad():
        ok = m(small.x).argmax(1).eq(small.y)
    item = audit_gradients(m, small.x[ok], small.y[ok])
    assert item.evidence["ce_zero_gradient_fraction"] > 0.5
    assert item.evidence["dlr_zero_gradient_fraction"] == 0
    assert item.verdict is Verdict.VALID and "CE" in item.message


def test_clean_flags_audit_can_fail(digits_model, small) -> None:
    m = RobustModel(_BatchDependent(digits_model.net), digits_model.info)
    r = _run("fgsm", _ctx(m, small), epsilons=[0.1], audit_samples=16)
    item = _item(r, "clean_flags_fp32")
    assert item.verdict is Verdict.INVALID and item.evidence["disagreements"] > 0
    assert r.metrics["adversarial/fgsm/audit/verdict"] == 2
    ok = _run("fgsm", _ctx(digits_model, small), epsilons=[0.1], audit_samples=16)
    assert _item(ok, "clean_flags_fp32").verdict is Verdict.VALID


# -- item 9: certification in the model's input scale --------------------------------------------


class _Scaled(nn.Module):
    def __init__(self, net: nn.Module, scale: float) -> None:
        super().__init__()
        self.net, self.scale = net, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x / self.scale)


@pytest.mark.parametrize("sampling", ["fixed", "adaptive"])
def test_certify_curve_independent_of_input_scale(sampling: str) -> None:
    from test_certify_check import SMALL, margin_data, run_check

    SMALL = {**SMALL, "sampling": sampling, "n": 4000}
    model, data = margin_data(0.3)
    big_model = RobustModel(_Scaled(model.net, 255.0), ModelInfo(spec="t255", format="test", num_classes=2, input_shape=(1, 4, 4), bounds=(0.0, 255.0)))
    big_data = Dataset(spec=data.spec, split="test", ids=list(data.ids), y=data.y, classes=data.classes, x=data.x * 255.0)
    a = run_check(model, data, SMALL)
    b = run_check(big_model, big_data, SMALL)
    for k, v in a.metrics.items():
        assert b.metrics[k] == pytest.approx(v, rel=1e-4, abs=1e-6), k
    assert a.metrics["certify/sigma_0.25/certified_accuracy_at_r_0.25"] > 0
    ra = [v for v in a.per_sample["certify/sigma_0.25/radius"] if v is not None]
    rb = [v for v in b.per_sample["certify/sigma_0.25/radius"] if v is not None]
    assert rb == pytest.approx(ra, rel=1e-4, abs=1e-6)


# -- Also: compare and report show (and compare refuses) scorecards made with other settings -----


def test_compare_refuses_precision_or_protocol_mismatch(tmp_path) -> None:
    from click.testing import CliRunner
    from test_report_cards import make_card

    from robustlab.cli import main

    a = make_card(n=50, robust_flags=[True] * 25 + [False] * 25)
    b = make_card(n=50, robust_flags=[True] * 20 + [False] * 30)
    a.run["precision"], b.run["precision"] = "fp32", "bf16"
    pa, pb = a.write(tmp_path / "a.json"), b.write(tmp_path / "b.json")
    runner = CliRunner()
    res = runner.invoke(main, ["compare", str(pa), str(pb)])
    assert res.exit_code == 2 and "precision" in res.output and "fp32 vs bf16" in res.output and "--allow-mismatch" in res.output
    ok = runner.invoke(main, ["compare", str(pa), str(pb), "--allow-mismatch"])
    assert ok.exit_code == 0 and ok.output.startswith("WARNING:") and "run.precision: fp32 vs bf16" in ok.output
    # same precision, different corruption protocol in a check's params
    b.run["precision"] = "fp32"
    a.checks[-1].params["protocol"], b.checks[-1].params["protocol"] = "native", "upsample"
    pa, pb = a.write(tmp_path / "a2.json"), b.write(tmp_path / "b2.json")
    res = runner.invoke(main, ["compare", str(pa), str(pb)])
    assert res.exit_code == 2 and f"{a.checks[-1].id}.protocol: native vs upsample" in res.output
    b.checks[-1].params["protocol"] = "native"
    same = runner.invoke(main, ["compare", str(pa), str(b.write(tmp_path / "b3.json"))])
    assert same.exit_code == 0 and "WARNING" not in same.output


def test_report_warns_when_baseline_used_other_precision(tmp_path) -> None:
    from click.testing import CliRunner
    from test_report_cards import make_card

    from robustlab.cli import main

    a = make_card(n=50, robust_flags=[True] * 25 + [False] * 25)
    b = make_card(n=50, robust_flags=[True] * 25 + [False] * 25)
    b.run["precision"] = "bf16"
    pa, pb = a.write(tmp_path / "base.json"), b.write(tmp_path / "cand.json")
    out = tmp_path / "r.html"
    res = CliRunner().invoke(main, ["report", str(pb), "--baseline", str(pa), "-o", str(out)])
    assert res.exit_code == 0, res.output
    html = out.read_text()
    assert "Warning:" in html and "run.precision: fp32 vs bf16" in html
    plain = tmp_path / "p.html"
    CliRunner().invoke(main, ["report", str(pa), "--baseline", str(pa), "-o", str(plain)])
    assert "Warning:</strong>" not in plain.read_text()
