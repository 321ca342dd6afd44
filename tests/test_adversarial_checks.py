"""The adversarial checks end to end: metrics and definitions, per-sample flags, resume, batch-size
independence, parameter validation, and the validity audit on toy models with gradient masking,
softmax outputs and randomness."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from robustlab.checks import CHECKS, RunContext
from robustlab.errors import SuiteError
from robustlab.models.wrapper import ModelInfo, RobustModel
from robustlab.scorecard import Verdict
from robustlab.store import ResultStore


pytestmark = pytest.mark.usefixtures("one_thread")  # attack loops: many small passes


def _ctx(model: Any, data: Any, *, batch_size: int = 64, store: ResultStore | None = None, tmp: Path = Path(".")) -> RunContext:
    return RunContext(
        model=model, data=data, seed=0, batch_size=batch_size, device=torch.device("cpu"), out_dir=tmp,
        store=store or ResultStore(None, {}), load_data=lambda *a, **k: data, progress=lambda it, total=None, desc="": it,
    )


def _run(name: str, ctx: RunContext, **params: Any):
    cls = CHECKS.get(name)
    return cls(id=name, params=cls.parse_params(params)).run(ctx)


@pytest.fixture(scope="module")
def small(digits_data):
    return digits_data.limit(48)


def test_pgd_check_metrics_and_flags(digits_model, small) -> None:
    r = _run("pgd", _ctx(digits_model, small), steps=10, epsilons=[0.05, 0.1, 0.3])
    m = r.metrics
    clean = m["adversarial/pgd/clean_accuracy"]
    ra = [m[f"adversarial/pgd/eps_{e}/robust_accuracy"] for e in ("0.05", "0.1", "0.3")]
    assert ra[0] <= clean
    # the sweep's flags at eps_j are the worst case over the separate runs at every eps_i <= eps_j
    # (each epsilon has its own seeds, so a separate run reproduces the sweep's raw flags)
    raw = [_run("pgd", _ctx(digits_model, small), steps=10, epsilons=[e], audit=False).per_sample[f"robust/eps_{e}"] for e in ("0.05", "0.1", "0.3")]
    merged = [all(fl) for fl in zip(*raw[:1])], [all(fl) for fl in zip(*raw[:2])], [all(fl) for fl in zip(*raw)]
    assert [r.per_sample[f"robust/eps_{e}"] for e in ("0.05", "0.1", "0.3")] == list(merged)
    assert [m[f"adversarial/pgd/eps_{e}/robust_accuracy"] for e in ("0.05", "0.1", "0.3")] == [sum(f) / len(small) for f in merged]
    assert m["adversarial/pgd/robust_accuracy"] == ra[1]  # primary: the digits budget 0.1
    assert m["adversarial/pgd/primary_eps"] == pytest.approx(0.1)
    iv = r.intervals["adversarial/pgd/robust_accuracy"]
    assert iv.low <= ra[1] <= iv.high
    flags = r.per_sample["robust/eps_0.1"]
    assert len(flags) == len(small) and sum(flags) / len(small) == pytest.approx(ra[1])
    assert not any(f and not c for f, c in zip(flags, r.per_sample["clean_correct"]))
    assert "adversarial/pgd/eps_0.1/worst_class_robust_accuracy" in m
    assert m["adversarial/pgd/eps_0.1/perturbation/max_norm"] <= 0.1 + 1e-6
    assert any("Wilson" in d or "wilson" in d for d in r.definitions.values())
    names = {a.name for a in r.audit}
    assert {"randomized_forward", "softmax_outputs", "gradients", "large_eps_accuracy", "clean_flags_fp32", "monotone_in_eps", "adversarial_recheck", "convergence"} <= names
    assert all(a.name in ("convergence",) or a.verdict is Verdict.VALID for a in r.audit)


def test_pgd_check_batch_size_and_resume(digits_model, small, tmp_path: Path, monkeypatch) -> None:
    a = _run("pgd", _ctx(digits_model, small, batch_size=48), steps=5, epsilons=[0.1], audit=False)
    store = ResultStore(tmp_path / "r.sqlite", {"k": 1})
    store.begin(resume=False)
    b = _run("pgd", _ctx(digits_model, small, batch_size=16, store=store), steps=5, epsilons=[0.1], audit=False)
    assert a.per_sample["robust/eps_0.1"] == b.per_sample["robust/eps_0.1"]
    # resume: every batch is stored, so a second run does not attack again
    import robustlab.attacks.pgd as pgd_mod

    def boom(*_a: Any, **_k: Any) -> None:
        raise AssertionError("attacked again although the batch was stored")

    monkeypatch.setattr(pgd_mod.PGD, "run", boom)
    c = _run("pgd", _ctx(digits_model, small, batch_size=16, store=store), steps=5, epsilons=[0.1], audit=False)
    assert c.metrics == b.metrics


def test_autoattack_check_equals_pyautoattack(digits_model, small) -> None:
    """The check (reference engine, run seed 0) reproduces pyautoattack called directly."""
    from pyautoattack import AutoAttack

    r = _run("autoattack", _ctx(digits_model, small, batch_size=64), engine="reference", n_iter=30, square_queries=300, audit=False)
    a = AutoAttack(digits_model, eps=0.1, norm="Linf", seed=0)
    a.logger.setLevel(logging.ERROR)
    for at in (a.apgd, a.apgd_targeted):
        at.n_iter, at.n_iter_2, at.n_iter_min, at.size_decr = 30, 6, 1, 1
    a.fab.n_iter = 30
    a.square.n_queries = 300
    xa, _ = a.run_standard_evaluation(small.x.contiguous(), small.y, batch_size=64)
    ref = digits_model(xa).argmax(1).eq(small.y).float().mean().item()
    assert r.metrics["adversarial/autoattack/robust_accuracy"] == pytest.approx(ref, abs=0)
    assert "adversarial/autoattack/eps_0.1/after_square/robust_accuracy" in r.metrics
    assert len(r.per_sample["fooled_by/eps_0.1"]) == len(small)


def test_fgsm_and_minimal_norm(digits_model, small) -> None:
    f = _run("fgsm", _ctx(digits_model, small), epsilons=[0.1], audit=False)
    p = _run("pgd", _ctx(digits_model, small), epsilons=[0.1], steps=20, audit=False)
    assert f.metrics["adversarial/fgsm/robust_accuracy"] >= p.metrics["adversarial/pgd/robust_accuracy"] - 0.05
    mn = _run("minimal_norm", _ctx(digits_model, small), attack="fmn", norm="l2", steps=30, epsilons=[0.25, 0.5, 1.0], audit=False)
    m = mn.metrics
    assert m["adversarial/minimal_norm/median_min_norm"] > 0
    curve = mn.series["robust_accuracy_vs_eps"].y["fmn"]
    assert all(a >= b for a, b in zip(curve, curve[1:])) and curve[-1] == 0.0
    # the curve and the per-epsilon metrics come from the same per-sample minimal norms
    mins = mn.per_sample["min_norm"]
    assert m["adversarial/minimal_norm/eps_0.5/robust_accuracy"] == pytest.approx(sum(1 for v in mins if v is None or v > 0.5) / len(mins))


@pytest.mark.parametrize(
    "name,params",
    [
        ("pgd", {"norm": "l7"}),
        ("pgd", {"epsilons": [-0.1]}),
        ("pgd", {"steps": 0}),
        ("pgd", {"loss": "hinge"}),
        ("autoattack", {"version": "plus"}),
        ("autoattack", {"engine": "gpu"}),
        ("minimal_norm", {"attack": "cw_l2", "norm": "linf"}),
        ("minimal_norm", {"attack": "boundary"}),
    ],
)
def test_params_validation(name: str, params: dict[str, Any]) -> None:
    with pytest.raises(SuiteError):
        CHECKS.get(name).parse_params(params)


def test_epsilon_strings_and_defaults(digits_model, cifar_model_info_only) -> None:
    from robustlab.attacks.base import Norm
    from robustlab.attacks.scoring import resolve_epsilons, standard_eps

    p = CHECKS.get("autoattack").parse_params({"epsilons": ["8/255"]})
    assert p.epsilons == (8 / 255,)
    assert standard_eps(digits_model, Norm.LINF) == pytest.approx(0.1)
    assert standard_eps(cifar_model_info_only, Norm.LINF) == pytest.approx(8 / 255)
    assert standard_eps(cifar_model_info_only, Norm.L2) == pytest.approx(0.5)
    eps, prim = resolve_epsilons(digits_model, Norm.LINF, None, None, sweep=(0.5, 1.0, 2.0))
    assert eps == pytest.approx([0.05, 0.1, 0.2]) and prim == pytest.approx(0.1)
    odd = RobustModel(nn.Flatten(), ModelInfo(spec="t", format="t", num_classes=10, input_shape=(2, 5, 5)))
    with pytest.raises(SuiteError, match="epsilons"):
        standard_eps(odd, Norm.LINF)


@pytest.fixture(scope="module")
def cifar_model_info_only() -> RobustModel:
    return RobustModel(nn.Flatten(), ModelInfo(spec="t", format="t", num_classes=10, input_shape=(3, 32, 32), dataset="samples:cifar10"))


# -- audit on toy models ----------------------------------------------------------------------


class _Quantised(nn.Module):
    """Gradient masking: inputs are rounded to 4 levels before the network (zero gradients)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.round(x * 4) / 4)


class _Softmax(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.net(x), dim=1)


class _Noisy(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x + 0.2 * torch.randn_like(x))


def _wrap(digits_model: RobustModel, cls: type) -> RobustModel:
    return RobustModel(cls(digits_model.net), digits_model.info)


def _item(r: Any, name: str):
    return next(a for a in r.audit if a.name.startswith(name))


def test_audit_flags_gradient_masking(digits_model, small) -> None:
    m = _wrap(digits_model, _Quantised)
    r = _run("pgd", _ctx(m, small), steps=10, epsilons=[0.1], audit_samples=32)
    assert _item(r, "gradients").verdict is Verdict.SUSPECT
    assert r.metrics["adversarial/pgd/audit/verdict"] >= 1
    ref = _run("pgd", _ctx(digits_model, small), steps=10, epsilons=[0.1], audit_samples=32)
    assert _item(ref, "gradients").verdict is Verdict.VALID


def test_audit_flags_black_box_beating_white_box(digits_model, small) -> None:
    m = _wrap(digits_model, _Quantised)
    r = _run("autoattack", _ctx(m, small.limit(24)), n_iter=10, square_queries=300, audit_samples=16)
    assert _item(r, "black_box_beats_white_box").verdict is Verdict.SUSPECT
    assert r.metrics["adversarial/autoattack/audit/verdict"] >= 1


def test_audit_flags_softmax_outputs(digits_model, small) -> None:
    r = _run("fgsm", _ctx(_wrap(digits_model, _Softmax), small), epsilons=[0.1], audit_samples=16)
    assert _item(r, "softmax_outputs").verdict is Verdict.SUSPECT


def test_audit_flags_randomized_model(digits_model, small) -> None:
    torch.manual_seed(0)  # the toy model's noise uses the global RNG (test code only)
    m = _wrap(digits_model, _Noisy)
    r = _run("fgsm", _ctx(m, small), epsilons=[0.1], audit_samples=16)
    assert _item(r, "randomized_forward").verdict is Verdict.SUSPECT
    assert "rand" in _item(r, "randomized_forward").message
    ok = _run("fgsm", _ctx(digits_model, small), epsilons=[0.1], audit_samples=16)
    assert _item(ok, "randomized_forward").verdict is Verdict.VALID
