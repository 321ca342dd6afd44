"""The ``certify`` suite check and the ``robustlab certify`` command."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy.stats import norm
from torch import nn

from robustlab.checks import CHECKS, RunContext
from robustlab.data import Dataset
from robustlab.errors import SuiteError
from robustlab.models.wrapper import ModelInfo, RobustModel
from robustlab.scorecard import Scorecard, Verdict
from robustlab.store import ResultStore

SMALL = {"sigmas": [0.25], "n0": 50, "n": 400, "num_points": 10, "attack_steps": 3, "attack_samples": 4, "attack_n": 100,
         "interval_radii": [0.25, 0.5], "radii": [0, 0.25, 0.5], "predict_n": 200}


def make_ctx(model: RobustModel, data: Dataset, *, seed: int = 0, batch_size: int = 64, store: ResultStore | None = None) -> RunContext:
    return RunContext(model=model, data=data, seed=seed, batch_size=batch_size, device=torch.device("cpu"), out_dir=Path("."),
                      store=store or ResultStore(None, {}), load_data=lambda *a, **k: data, progress=lambda it, **k: it, data_spec=data.spec)


def run_check(model: RobustModel, data: Dataset, raw: dict, *, check_id: str = "certify", **ctx_kw):  # type: ignore[no-untyped-def]
    cls = CHECKS.get("certify")
    return cls(id=check_id, params=cls.parse_params(raw)).run(make_ctx(model, data, **ctx_kw))


class Linear2(nn.Module):
    """Logits (0, w.x + b), ||w|| = 1: pA = Phi(|w.x + b| / sigma) under Gaussian noise."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w / w.norm(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1) @ self.w
        return torch.stack([torch.zeros_like(s), s], 1)


def margin_data(margin: float, n: int = 8) -> tuple[RobustModel, Dataset]:
    """n points at L2 distance ``margin`` on either side of a hyperplane through the centre of [0,1]^16."""
    w = torch.randn(16, generator=torch.Generator().manual_seed(0))
    net = Linear2(w - w.mean())  # w orthogonal to the all-ones vector: the boundary passes through 0.5
    model = RobustModel(net, ModelInfo(spec="test", format="test", num_classes=2, input_shape=(1, 4, 4)))
    signs = torch.tensor([1.0 if i % 2 == 0 else -1.0 for i in range(n)])
    x = 0.5 + signs[:, None] * margin * net.w[None, :]
    y = (signs > 0).long()
    data = Dataset(spec="synthetic", split="test", ids=[f"s/{i}" for i in range(n)], y=y, classes=["0", "1"], x=x.view(n, 1, 4, 4))
    return model, data


# -- parameters ------------------------------------------------------------------------------------------
def test_params_validation() -> None:
    cls = CHECKS.get("certify")
    p = cls.parse_params({"sigmas": ["0.25", 0.5], "n": 1000})
    assert p.sigmas == [0.25, 0.5] and p.n == 1000 and p.alpha == 0.001 and p.n0 == 100
    with pytest.raises(SuiteError, match="cannot certify any point"):
        cls.parse_params({"n": 5})
    with pytest.raises(SuiteError, match="positive"):
        cls.parse_params({"sigmas": [-0.1]})
    with pytest.raises(SuiteError, match="alpha"):
        cls.parse_params({"alpha": 1.5})
    with pytest.raises(SuiteError, match="did you mean 'sigmas'"):
        cls.parse_params({"sigma": [0.25]})


def test_suite_entries_parse() -> None:
    from robustlab.suite import parse_suite

    text = """
name: t
checks:
  - check: certify
    params: {sigmas: [0.25], n0: 100, n: 1000, num_points: 100, attack: false}
  - check: certify
    id: certify_wide
    params: {sigmas: [0.5, 1.0], n: 10000, interval_radii: [0.5, 1.0]}
"""
    s = parse_suite(text)
    assert [e.id for e in s.entries] == ["certify", "certify_wide"]


# -- the check on synthetic data with closed-form pA -------------------------------------------------------
def test_robust_linear_model_certifies_its_margin() -> None:
    """Points at distance 0.6, sigma 0.25: every point is certified correct with radius close to
    (below) 0.6; no collapse note; the interval is consistent."""
    model, data = margin_data(0.6)
    raw = {**SMALL, "n": 20_000, "num_points": 0, "radii": [0, 0.5, 0.7], "interval_radii": [0.3]}
    res = run_check(model, data, raw)
    m = res.metrics
    assert m["certify/base_accuracy"] == 1.0
    assert m["certify/sigma_0.25/certified_accuracy_at_r_0"] == 1.0
    assert m["certify/sigma_0.25/certified_accuracy_at_r_0.5"] == 1.0
    assert m["certify/sigma_0.25/certified_accuracy_at_r_0.7"] == 0.0  # never beyond the exact radius 0.6
    radii = np.array(res.per_sample["certify/sigma_0.25/radius"])
    assert np.all(radii <= 0.6) and np.all(radii > 0.55)
    assert m["certify/sigma_0.25/average_certified_radius"] == pytest.approx(radii.mean())
    assert m["certify/sigma_0.25/smoothed_accuracy"] == 1.0
    # the attack at r = 0.3 < margin cannot flip g: upper = lower = 1
    assert m["certify/sigma_0.25/interval_at_r_0.3/lower"] == 1.0
    assert m["certify/sigma_0.25/interval_at_r_0.3/upper"] == 1.0
    assert m["certify/sigma_0.25/interval_at_r_0.3/gap"] == 0.0
    assert not any("collapses" in n for n in res.notes)
    assert all(a.verdict is Verdict.VALID for a in res.audit)


def test_fragile_model_gets_the_honesty_note_and_attack_breaks_it() -> None:
    """Margin 0.02 with sigma 0.5: pA = Phi(0.04) = 0.516, so CERTIFY abstains almost everywhere while
    the base model is 100% accurate: the result says so. The attack at r = 0.25 > margin flips g."""
    model, data = margin_data(0.02)
    assert norm.cdf(0.02 / 0.5) < 0.52
    raw = {**SMALL, "sigmas": [0.5], "n": 2000, "num_points": 0, "interval_radii": [0.25], "attack_steps": 10, "attack_samples": 16, "attack_n": 2000}
    res = run_check(model, data, raw)
    m = res.metrics
    assert m["certify/base_accuracy"] == 1.0
    assert m["certify/sigma_0.5/certified_accuracy_at_r_0"] <= 0.25
    assert m["certify/sigma_0.5/abstention_rate"] >= 0.75
    assert any("collapses" in n and "Gaussian noise" in n for n in res.notes)
    item = next(a for a in res.audit if a.name.endswith("noise_trained_base_model"))
    assert item.verdict is Verdict.SUSPECT
    assert m["certify/sigma_0.5/interval_at_r_0.25/upper"] == 0.0  # every point pushed across the boundary


# -- the check on the zoo digits model ----------------------------------------------------------------------
def test_check_on_digits_model(digits_model: RobustModel, digits_data: Dataset) -> None:
    res = run_check(digits_model, digits_data, SMALL)
    m, n_all = res.metrics, len(digits_data)
    s = "certify/sigma_0.25"
    for key in ["certify/base_accuracy", f"{s}/average_certified_radius", f"{s}/abstention_rate", f"{s}/smoothed_accuracy",
                f"{s}/certified_accuracy_at_r_0", f"{s}/certified_accuracy_at_r_0.5", f"{s}/interval_at_r_0.5/lower", f"{s}/interval_at_r_0.5/upper",
                f"{s}/interval_at_r_0.5/gap"]:
        assert key in m and 0 - 1e-9 <= m[key] <= max(1.0, m[key]) and not math.isnan(m[key]), key
        assert key in res.definitions or key.rsplit("/", 1)[0] in res.definitions, key
    curve = [m[f"{s}/certified_accuracy_at_r_{r}"] for r in ("0", "0.25", "0.5")]
    assert curve == sorted(curve, reverse=True)
    assert m[f"{s}/interval_at_r_0.5/gap"] == pytest.approx(m[f"{s}/interval_at_r_0.5/upper"] - m[f"{s}/interval_at_r_0.5/lower"])
    assert res.counts[f"{s}/certified_accuracy_at_r_0"] == 10
    radius = res.per_sample[f"{s}/radius"]
    assert len(radius) == n_all and sum(r is not None for r in radius) == 10
    assert "certify/certified_accuracy" in res.series and f"{s}/interval" in res.series
    # the result survives the scorecard's JSON round trip
    card = Scorecard(tool={}, model={}, data={}, suite={}, environment={}, run={}, checks=[res])
    back = Scorecard.from_dict(json.loads(card.to_json()))
    assert back.metrics() == card.metrics()


def test_same_seed_same_result_whatever_the_batch_size(digits_model: RobustModel, digits_data: Dataset) -> None:
    raw = {**SMALL, "attack": False}
    a = run_check(digits_model, digits_data, raw, batch_size=32)
    b = run_check(digits_model, digits_data, {**raw, "batch_size": 97}, batch_size=500)
    assert a.metrics == b.metrics and a.per_sample == b.per_sample
    c = run_check(digits_model, digits_data, raw, seed=1)
    assert c.per_sample != a.per_sample


def test_resume_reuses_stored_certificates(digits_model: RobustModel, digits_data: Dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    from robustlab.smoothing.classifier import SmoothedClassifier

    store = ResultStore(None, {"t": 1})
    raw = {**SMALL, "attack": False}
    first = run_check(digits_model, digits_data, raw, store=store)

    def boom(*a, **k):  # type: ignore[no-untyped-def]
        raise AssertionError("certify ran again instead of using the store")

    monkeypatch.setattr(SmoothedClassifier, "certify", boom)
    second = run_check(digits_model, digits_data, raw, store=store)
    assert second.metrics == first.metrics


def test_interval_attacks_are_stored_and_do_not_depend_on_the_chunking(digits_model: RobustModel, digits_data: Dataset,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The robustness interval's attacks go through the result store like the certificates: a resumed run
    reuses them (before: they ran again after every restart, and on every rank under torchrun)."""
    import robustlab.checks.certify as certify_mod

    raw = {**SMALL, "base_attack": True}
    store = ResultStore(None, {"t": 2})
    first = run_check(digits_model, digits_data, raw, store=store)
    assert any(k.endswith("/upper") for k in first.metrics)
    # chunks of 2 points (noise batch 8 / 4 samples) against chunks of 64: same per-point seeds, same result
    small = run_check(digits_model, digits_data, {**raw, "batch_size": 8}, batch_size=8)
    big = run_check(digits_model, digits_data, {**raw, "batch_size": 8 * 64}, batch_size=8)
    assert {k: v for k, v in small.metrics.items() if "/interval/" in k} == {k: v for k, v in big.metrics.items() if "/interval/" in k}

    def boom(*a, **k):  # type: ignore[no-untyped-def]
        raise AssertionError("the interval attack ran again instead of using the store")

    monkeypatch.setattr(certify_mod, "smoothadv_pgd_l2", boom)
    monkeypatch.setattr(certify_mod.PGD, "perturb", boom)
    second = run_check(digits_model, digits_data, raw, store=store)
    assert second.metrics == first.metrics


def test_entry_id_prefixes_keys(digits_model: RobustModel, digits_data: Dataset) -> None:
    res = run_check(digits_model, digits_data, {**SMALL, "attack": False, "num_points": 3}, check_id="certify_wide")
    assert all(k.startswith("certify/certify_wide/") for k in res.metrics)


# -- the command ---------------------------------------------------------------------------------------------
def test_certify_command_writes_scorecard(tmp_path: Path) -> None:
    from robustlab.cli import main

    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["certify", "--model", "zoo:digits-cnn", "--sigma", "0.25", "--sigma", "0.5", "--n", "300", "--n0", "30",
                                  "--num-points", "6", "--no-attack", "--predict-n", "100", "--device", "cpu", "--out", str(out),
                                  "--no-mlflow", "--no-report", "--radii", "0,0.25,0.5"])
    assert r.exit_code == 0, r.output
    assert "r=0.25" in r.output and "ACR" in r.output and "PREDICT" in r.output
    card = Scorecard.read(out / "scorecard.json")
    assert card.suite["name"] == "certify"
    m = card.metrics()
    assert "certify/sigma_0.25/certified_accuracy_at_r_0.5" in m and "certify/sigma_0.5/smoothed_accuracy" in m
    assert f"{m['certify/sigma_0.25/certified_accuracy_at_r_0.25']:.3f}" in r.output


def test_certify_command_rejects_impossible_budget(tmp_path: Path) -> None:
    from robustlab.cli import main

    r = CliRunner().invoke(main, ["certify", "--model", "zoo:digits-cnn", "--n", "5", "--out", str(tmp_path)])
    assert r.exit_code == 2
    assert "cannot certify any point" in r.output
