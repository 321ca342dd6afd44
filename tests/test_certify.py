"""Randomized smoothing core: bounds, CERTIFY/PREDICT on classifiers with closed-form pA, coverage,
abstention, batch-size invariance, and the SmoothAdv attack."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import beta, binomtest, norm
from torch import nn

import robustlab.smoothing.sampling as sampling
from robustlab.smoothing import (
    ABSTAIN,
    SmoothedClassifier,
    average_certified_radius,
    certified_accuracy,
    certified_radius,
    lower_confidence_bound,
    max_certifiable_radius,
    predict_pvalue,
    smoothadv_pgd_l2,
    standard_sigmas,
)
from robustlab.errors import RobustlabError
from robustlab.stats import clopper_pearson_interval
from robustlab.models.wrapper import ModelInfo, RobustModel


class Linear2(nn.Module):
    """Two classes, logits (0, w.x + b) with ||w|| = 1: under N(0, sigma^2 I) noise,
    P(class 1) = Phi((w.x + b) / sigma) and the L2 distance to the boundary is |w.x + b|."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w.flatten() / w.norm(), requires_grad=False)
        self.b = float(b)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(s), s], 1)


def linear_model(shape: tuple[int, int, int] = (1, 4, 4), seed: int = 0) -> tuple[RobustModel, Linear2]:
    g = torch.Generator().manual_seed(seed)
    net = Linear2(torch.randn(int(np.prod(shape)), generator=g), b=0.0)
    return RobustModel(net, ModelInfo(spec="test", format="test", num_classes=2, input_shape=shape)), net


def point_with_margin(net: Linear2, margin: float, shape: tuple[int, int, int]) -> torch.Tensor:
    """An input at signed distance ``margin`` from the boundary (inside [0, 1] for small margins)."""
    base = torch.full((1, *shape), 0.5)
    s0 = float(base.flatten(1) @ net.w + net.b)
    return base + (margin - s0) * net.w.view(1, *shape)


def small_cnn(seed: int = 0) -> RobustModel:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    return RobustModel(net, ModelInfo(spec="test", format="test", num_classes=10, input_shape=(1, 8, 8)))


# -- statistics -------------------------------------------------------------------------------------
def test_lower_bound_is_one_sided_clopper_pearson() -> None:
    alpha = 0.001
    for k, n in [(0, 100), (1, 100), (57, 100), (99, 100), (100, 100), (9990, 10000)]:
        ours = float(lower_confidence_bound(k, n, alpha))
        # Cohen et al.: proportion_confint(k, n, alpha=2*alpha, method="beta")[0] == lower end of a
        # two-sided 1 - 2*alpha Clopper-Pearson interval (robustlab.stats, independent code)
        ref = clopper_pearson_interval(k, n, level=1 - 2 * alpha).low
        assert ours == pytest.approx(ref, abs=1e-12)
        # scipy's own exact (Clopper-Pearson) interval
        ref2 = binomtest(k, n).proportion_ci(confidence_level=1 - 2 * alpha, method="exact").low
        assert ours == pytest.approx(ref2, abs=1e-10)
    assert float(lower_confidence_bound(100, 100, alpha)) == pytest.approx(alpha ** (1 / 100))
    arr = lower_confidence_bound(np.array([10, 50, 90]), 100, 0.05)
    assert arr.shape == (3,) and np.all(np.diff(arr) > 0)


def test_radius_formula_and_abstention() -> None:
    assert float(certified_radius(0.5, 0.25)) == 0.0
    assert float(certified_radius(0.49, 0.25)) == 0.0
    assert float(certified_radius(norm.cdf(2.0), 0.5)) == pytest.approx(1.0)
    # the largest radius n samples can give
    assert max_certifiable_radius(100_000, 0.001, 0.25) == pytest.approx(0.25 * norm.ppf(0.001 ** (1 / 100_000)))
    assert max_certifiable_radius(100_000, 0.001, 0.25) == pytest.approx(0.9535, abs=2e-3)  # Cohen et al.'s ~0.95 cap


def test_predict_pvalue_matches_scipy() -> None:
    assert predict_pvalue(60, 40) == pytest.approx(binomtest(60, 100, 0.5).pvalue)
    assert predict_pvalue(50, 50) == pytest.approx(1.0)
    assert predict_pvalue(0, 0) == 1.0


def test_certified_accuracy_and_acr_definitions() -> None:
    radii = np.array([0.0, 0.3, 0.6, 1.2])
    correct = np.array([False, True, False, True])
    assert certified_accuracy(radii, correct, 0.0) == 0.5  # fraction of ALL points
    assert certified_accuracy(radii, correct, 0.5) == 0.25
    assert certified_accuracy(radii, correct, 2.0) == 0.0
    assert average_certified_radius(radii, correct) == pytest.approx((0.3 + 1.2) / 4)


def test_standard_sigmas() -> None:
    assert standard_sigmas("samples:cifar10") == (0.12, 0.25, 0.5, 1.0)
    assert standard_sigmas("cifar100") == (0.12, 0.25, 0.5, 1.0)
    assert standard_sigmas("digits") == (0.25, 0.5, 1.0)
    assert standard_sigmas("samples:imagenet") == (0.25, 0.5, 1.0)


# -- CERTIFY on a classifier with closed-form pA -----------------------------------------------------
def test_certify_radius_matches_closed_form() -> None:
    """Linear classifier: pA = Phi(margin / sigma) and the exact smoothed radius equals the margin.
    CERTIFY's radius is below the margin (the bound holds) and close to it at large n."""
    shape = (1, 4, 4)
    model, net = linear_model(shape)
    sigma, n, alpha = 0.5, 100_000, 0.001
    margins = [0.1, 0.3, 0.6]
    x = torch.cat([point_with_margin(net, m, shape) for m in margins])
    smooth = SmoothedClassifier(model, sigma=sigma, batch_size=50_000)
    certs = smooth.certify(x, [11, 12, 13], n0=100, n=n, alpha=alpha)
    for m, c in zip(margins, certs):
        p_true = norm.cdf(m / sigma)
        assert sigma * norm.ppf(p_true) == pytest.approx(m)  # the exact radius of g at x is the margin
        assert c.prediction == 1 and c.n == n
        # the vote count is a Binomial(n, pA) draw: within 5 standard deviations
        assert abs(c.count - n * p_true) < 5 * math.sqrt(n * p_true * (1 - p_true))
        assert c.p_lower <= p_true
        assert c.radius == pytest.approx(sigma * norm.ppf(c.p_lower))
        assert m - 0.03 < c.radius <= m  # tight: radius slack from the CP bound at n = 1e5 is about 0.01


def test_certify_deterministic_counts_give_exact_radius() -> None:
    """A classifier that ignores its input: every vote goes to class 3, so nA = n exactly."""

    class Const(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = torch.zeros(x.shape[0], 5)
            out[:, 3] = 1.0
            return out

    model = RobustModel(Const(), ModelInfo(spec="t", format="t", num_classes=5, input_shape=(1, 2, 2)))
    (c,) = SmoothedClassifier(model, sigma=0.25).certify(torch.rand(1, 1, 2, 2), [0], n0=10, n=1000, alpha=0.001)
    assert c.prediction == 3 and c.count == 1000
    assert c.radius == pytest.approx(0.25 * norm.ppf(0.001 ** (1 / 1000)), rel=1e-9)


def test_lower_bound_coverage_over_seeds() -> None:
    """Over many seeds, pA_lower <= pA holds at least 1 - alpha of the time; the naive estimate
    nA/n fails about half of the time (so this test can tell a wrong bound)."""
    shape = (1, 4, 4)
    model, net = linear_model(shape, seed=1)
    sigma, margin, n, alpha, trials = 0.5, 0.3, 200, 0.05, 600
    p_true = norm.cdf(margin / sigma)
    x = point_with_margin(net, margin, shape).expand(trials, *shape).contiguous()
    certs = SmoothedClassifier(model, sigma=sigma, batch_size=20_000).certify(x, list(range(trials)), n0=20, n=n, alpha=alpha)
    counts = np.array([c.count for c in certs])
    p_low = np.array([c.p_lower for c in certs])
    sel = np.array([c.selected for c in certs])
    assert set(sel.tolist()) <= {0, 1} and (sel == 1).mean() > 0.8
    p_sel = np.where(sel == 1, p_true, 1 - p_true)  # the bound is on the probability of the selected class
    fails = int((p_low > p_sel).sum())
    # binomial(trials, <= alpha): allow 3 standard deviations above the mean
    assert fails <= alpha * trials + 3 * math.sqrt(trials * alpha * (1 - alpha)), fails
    naive_fails = int((counts / n > p_sel).sum())
    assert naive_fails > 0.3 * trials
    # the counts of class 1 follow Binomial(n, pA): the mean is right
    c1 = counts[sel == 1]
    assert abs(c1.mean() / n - p_true) < 4 * math.sqrt(p_true * (1 - p_true) / (n * c1.size))


def test_certify_abstains_below_one_half() -> None:
    shape = (1, 4, 4)
    model, net = linear_model(shape)
    x = point_with_margin(net, 0.0, shape)  # pA = 1/2 exactly
    certs = SmoothedClassifier(model, sigma=0.5).certify(x.expand(5, *shape), [1, 2, 3, 4, 5], n0=100, n=2000, alpha=0.001)
    assert all(c.prediction == ABSTAIN and c.radius == 0.0 for c in certs)


# -- PREDICT ----------------------------------------------------------------------------------------
def test_predict_abstains_on_ties_and_answers_clear_cases() -> None:
    shape = (1, 4, 4)
    model, net = linear_model(shape, seed=2)
    smooth = SmoothedClassifier(model, sigma=0.5, batch_size=20_000)
    tie = point_with_margin(net, 0.0, shape).expand(20, *shape)
    preds = smooth.predict(tie, list(range(20)), n=2000, alpha=0.001)
    assert all(p.prediction == ABSTAIN for p in preds)
    assert all(p.count_top + p.count_second == 2000 for p in preds)
    clear = torch.cat([point_with_margin(net, 0.4, shape), point_with_margin(net, -0.4, shape)])
    p1, p0 = smooth.predict(clear, [5, 6], n=2000, alpha=0.001)
    assert (p1.prediction, p0.prediction) == (1, 0)
    assert p1.p_value < 0.001


# -- batch-size invariance and seeding ----------------------------------------------------------------
@pytest.mark.parametrize("channels_last", [False, True])
def test_results_do_not_depend_on_batch_size(monkeypatch: pytest.MonkeyPatch, channels_last: bool) -> None:
    monkeypatch.setattr(sampling, "NOISE_BLOCK_ELEMENTS", 64 * 50)  # 50-sample noise blocks: batches cut across blocks
    model = small_cnn()
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    seeds = [101, 102, 103, 104, 105, 106]
    ref = None
    for bs, group in [(7, 64), (64, 64), (1000, 64), (5000, 2), (5000, 1)]:
        s = SmoothedClassifier(model, sigma=0.5, batch_size=bs, max_group=group, channels_last=channels_last)
        got = (s.certify(x, seeds, n0=20, n=300, alpha=0.01), s.predict(x, seeds, n=300, alpha=0.01))
        if ref is None:
            ref = got
        assert got == ref, (bs, group)
    # an image's result does not depend on the images certified alongside
    s = SmoothedClassifier(model, sigma=0.5, batch_size=64, channels_last=channels_last)
    assert s.certify(x[3:4], seeds[3:4], n0=20, n=300, alpha=0.01)[0] == ref[0][3]
    # other seeds give other noise
    other = s.certify(x, [s_ + 1 for s_ in seeds], n0=20, n=300, alpha=0.01)
    assert [c.count for c in other] != [c.count for c in ref[0]]


def test_votes_stay_on_device_and_sum_to_n() -> None:
    model = small_cnn()
    s = SmoothedClassifier(model, sigma=0.25, batch_size=128)
    v = s.votes(torch.rand(3, 1, 8, 8), [1, 2, 3], num=500, phase="estimate")
    assert v.dtype == torch.long and v.shape == (3, 10) and v.device == model.device
    assert v.sum(1).tolist() == [500, 500, 500]


def test_user_errors() -> None:
    model = small_cnn()
    with pytest.raises(RobustlabError, match="sigma"):
        SmoothedClassifier(model, sigma=0.0)
    with pytest.raises(RobustlabError, match="alpha"):
        SmoothedClassifier(model, sigma=0.25).certify(torch.rand(1, 1, 8, 8), [0], n0=10, n=100, alpha=1.5)


# -- SmoothAdv ----------------------------------------------------------------------------------------
def test_smoothadv_moves_linear_classifier_by_eps() -> None:
    """For a linear classifier the best L2 attack moves straight towards the boundary: the margin
    drops by eps, and the result stays in the ball and in bounds."""
    shape = (1, 4, 4)
    model, net = linear_model(shape, seed=3)
    x = torch.cat([point_with_margin(net, 0.5, shape), point_with_margin(net, 0.8, shape)])
    y = torch.tensor([1, 1])
    eps = 0.2
    xa = smoothadv_pgd_l2(model, x, y, [1, 2], eps=eps, sigma=0.25, bounds=model.bounds, steps=20, samples=16)
    d = (xa - x).flatten(1).norm(dim=1)
    assert torch.all(d <= eps + 1e-5)
    assert float(xa.min()) >= 0.0 and float(xa.max()) <= 1.0
    m_before = (x.flatten(1) @ net.w).numpy()
    m_after = (xa.flatten(1) @ net.w).numpy()
    assert np.allclose(m_before - m_after, eps, atol=0.02)
    # reproducible, batch-size independent
    xb = smoothadv_pgd_l2(model, x, y, [1, 2], eps=eps, sigma=0.25, bounds=model.bounds, steps=20, samples=16, batch_size=16)
    assert torch.allclose(xa, xb, atol=1e-6)


def test_smoothadv_lowers_true_class_probability_of_cnn() -> None:
    model = small_cnn(1)
    x = torch.rand(4, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        y = model(x).argmax(1)
    xa = smoothadv_pgd_l2(model, x, y, [1, 2, 3, 4], eps=1.0, sigma=0.25, bounds=model.bounds, steps=10, samples=16)
    s = SmoothedClassifier(model, sigma=0.25)
    before = s.votes(x, [9] * 4, num=400, phase="e").gather(1, y[:, None]).sum()
    after = s.votes(xa, [9] * 4, num=400, phase="e").gather(1, y[:, None]).sum()
    assert int(after) < int(before)


def _cohen_certify(model: nn.Module, x: torch.Tensor, *, sigma: float, n0: int, n: int, alpha: float, batch: int, num_classes: int) -> tuple[int, float]:
    """Test oracle: a plain transcription of Cohen et al.'s ``Smooth.certify`` (global RNG, host-side
    counting loop, ``proportion_confint(method="beta")`` written with scipy's beta quantile)."""

    def sample(num: int) -> np.ndarray:
        counts = np.zeros(num_classes, dtype=int)
        with torch.no_grad():
            while num > 0:
                b = min(batch, num)
                num -= b
                rep = x.repeat((b, 1, 1, 1))
                for idx in model(rep + torch.randn_like(rep) * sigma).argmax(1).numpy():
                    counts[idx] += 1
        return counts

    c_hat = int(sample(n0).argmax())
    n_a = int(sample(n)[c_hat])
    p_low = beta.ppf(alpha, n_a, n - n_a + 1) if n_a > 0 else 0.0
    return (-1, 0.0) if p_low < 0.5 else (c_hat, sigma * float(norm.ppf(p_low)))


def test_agrees_with_reference_transcription() -> None:
    """Same model and budgets, independent noise: both certify (nearly) the exact radius and agree
    within Monte-Carlo error."""
    shape = (1, 4, 4)
    model, net = linear_model(shape, seed=5)
    sigma, n, alpha = 0.25, 20_000, 0.001
    margins = [0.15, 0.3, 0.5, -0.3]
    x = torch.cat([point_with_margin(net, m, shape) for m in margins])
    ours = SmoothedClassifier(model, sigma=sigma, batch_size=10_000).certify(x, [1, 2, 3, 4], n0=100, n=n, alpha=alpha)
    torch.manual_seed(0)
    for m, c, xi in zip(margins, ours, x):
        ref_cls, ref_r = _cohen_certify(model, xi[None], sigma=sigma, n0=100, n=n, alpha=alpha, batch=1000, num_classes=2)
        assert c.prediction == ref_cls == (1 if m > 0 else 0)
        assert abs(c.radius - ref_r) < 0.03
        assert c.radius <= abs(m) and ref_r <= abs(m)
