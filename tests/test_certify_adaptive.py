"""Adaptive (anytime-valid) CERTIFY: the confidence sequence, its coverage under optional stopping on
a classifier with closed-form pA, agreement with fixed-n CERTIFY, and the check's sampling mode."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import beta, norm

import robustlab.smoothing.sequential as sequential
from robustlab.smoothing import SamplingMode, SmoothedClassifier, confidence_sequence
from robustlab.checks import CHECKS
from robustlab.errors import SuiteError

from test_certify import linear_model, point_with_margin
from test_certify_check import margin_data, run_check


def log_m(s: int, t: int, p: float) -> float:
    """The Jeffreys-mixture log-martingale written independently with math.lgamma."""
    lb = lambda a, b: math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)  # noqa: E731
    return lb(0.5 + s, 0.5 + t - s) - lb(0.5, 0.5) - s * math.log(p) - (t - s) * math.log1p(-p)


def test_confidence_sequence_ends_solve_the_ville_boundary() -> None:
    alpha = 0.001
    cases = [(0, 50), (1, 100), (57, 100), (99, 100), (100, 100), (9990, 10_000), (100_000, 100_000), (31_000, 40_000)]
    lo, hi = confidence_sequence([s for s, _ in cases], [t for _, t in cases], alpha)
    for (s, t), l, u in zip(cases, lo, hi):
        assert 0.0 <= l <= s / t <= u <= 1.0
        if s > 0:  # the lower end is where M_t(p) = 1/alpha, just outside the sequence
            assert log_m(s, t, l) >= math.log(1 / alpha) and log_m(s, t, l) == pytest.approx(math.log(1 / alpha), abs=1e-6)
        else:
            assert l == 0.0
        if s < t:
            assert log_m(s, t, u) == pytest.approx(math.log(1 / alpha), abs=1e-6)
        # wider than the fixed-n Clopper-Pearson interval at the same level (the price of optional stopping)
        if 0 < s:
            assert l <= beta.ppf(alpha / 2, s, t - s + 1)
    # all successes: closed form of the lower end
    t = 10_000
    log_mix = math.lgamma(0.5 + t) + math.lgamma(0.5) - math.lgamma(1 + t) - 2 * math.lgamma(0.5)  # log B(t + 1/2, 1/2) / B(1/2, 1/2)
    expect = math.exp((log_mix - math.log(1 / alpha)) / t)
    assert float(confidence_sequence([t], t, alpha)[0][0]) == pytest.approx(expect, rel=1e-9)
    l0, u0 = confidence_sequence([0], 0, alpha)
    assert (l0[0], u0[0]) == (0.0, 1.0)
    with pytest.raises(ValueError):
        confidence_sequence([5], 3, alpha)


def test_look_schedule_and_decision() -> None:
    sched = sequential.look_schedule(100_000)
    assert sched[0] == sequential.FIRST_LOOK and sched[-1] == 100_000 and all(b > a for a, b in zip(sched, sched[1:]))
    assert sequential.look_schedule(50) == [50]
    thr = sequential.radius_thresholds([0.0, 0.25, 0.5], 0.25)
    assert thr.tolist() == pytest.approx([0.5, norm.cdf(1.0), norm.cdf(2.0)])
    d = sequential.decided(np.array([0.99, 0.6, 0.6, 0.2]), np.array([1.0, 0.9, 0.7, 0.4]), thr, reachable=0.999)
    assert d.tolist() == [True, False, True, True]
    # the largest radius cannot be reached within the cap: the one below it is the top target
    assert sequential.decided(np.array([0.9]), np.array([1.0]), thr, reachable=0.95).tolist() == [True]


def test_adaptive_lower_bound_holds_under_optional_stopping_over_600_seeds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Linear classifier, pA = Phi(margin / sigma) exactly; the requested radius sits at the true
    margin, the hardest case for a sequential test. The adaptive pA_lower exceeds the true pA of the
    selected class in at most alpha of 600 seeds; the same procedure with a fixed-n Clopper-Pearson
    bound read at each look (not valid under optional stopping) fails far more often, so the test
    can tell a wrong bound."""
    shape = (1, 4, 4)
    model, net = linear_model(shape, seed=1)
    sigma, margin, cap, alpha, trials = 0.5, 0.3, 2000, 0.05, 600
    p_true = norm.cdf(margin / sigma)
    x = point_with_margin(net, margin, shape).expand(trials, *shape).contiguous()
    smooth = SmoothedClassifier(model, sigma=sigma, batch_size=50_000, max_group=trials)
    limit = alpha * trials + 3 * math.sqrt(trials * alpha * (1 - alpha))

    def failures() -> tuple[int, np.ndarray]:
        certs = smooth.certify_adaptive(x, list(range(trials)), radii=[margin], n0=20, n=cap, alpha=alpha)
        sel = np.array([c.selected for c in certs])
        p_sel = np.where(sel == 1, p_true, 1 - p_true)
        p_low = np.array([c.p_lower for c in certs])
        for c in certs:
            assert c.count <= c.n <= cap
            assert c.radius == (pytest.approx(sigma * norm.ppf(c.p_lower)) if c.p_lower >= 0.5 else 0.0)
        return int((p_low > p_sel).sum()), np.array([c.n for c in certs])

    fails, used = failures()
    assert fails <= limit, fails
    assert used.min() < cap  # some seeds did stop early

    def clopper_pearson_each_look(s, t, a, **_):  # type: ignore[no-untyped-def]
        s = np.atleast_1d(np.asarray(s, dtype=float))
        t = np.broadcast_to(np.asarray(t, dtype=float), s.shape)
        lo = np.where(s > 0, beta.ppf(a, np.maximum(s, 1), t - s + 1), 0.0)
        hi = np.where(s < t, beta.ppf(1 - a, s + 1, np.maximum(t - s, 1)), 1.0)
        return lo, hi

    monkeypatch.setattr(sequential, "confidence_sequence", clopper_pearson_each_look)
    naive_fails, _ = failures()
    assert naive_fails > limit + 20, (fails, naive_fails)


def test_adaptive_matches_fixed_n_with_fewer_samples() -> None:
    """Margins away from the requested radii: adaptive and fixed-n CERTIFY certify the same radii,
    adaptive with far fewer samples."""
    shape = (1, 4, 4)
    model, net = linear_model(shape, seed=4)
    sigma, n, alpha = 0.25, 100_000, 0.001
    radii = [0.0, 0.25, 0.5, 0.75]
    margins = [0.12, 0.4, 0.62, 2.0, -0.3]
    x = torch.cat([point_with_margin(net, m, shape) for m in margins])
    smooth = SmoothedClassifier(model, sigma=sigma, batch_size=20_000)
    seeds = [7, 8, 9, 10, 11]
    fixed = smooth.certify(x, seeds, n0=100, n=n, alpha=alpha)
    adapt = smooth.certify_adaptive(x, seeds, radii=radii, n0=100, n=n, alpha=alpha)
    for m, f, a in zip(margins, fixed, adapt):
        assert [f.radius >= r for r in radii] == [a.radius >= r for r in radii], (m, f, a)
        assert f.prediction == a.prediction
        assert a.radius <= abs(m) + 1e-9  # never above the exact radius of g (the distance to the boundary)
    used = np.array([a.n for a in adapt])
    assert used.sum() * 5 < n * len(margins), used
    assert adapt[-1].prediction == 0 and adapt[-1].radius >= 0.25  # the other side of the boundary: class 0


def test_adaptive_does_not_depend_on_grouping() -> None:
    shape = (1, 4, 4)
    model, net = linear_model(shape, seed=2)
    x = torch.cat([point_with_margin(net, m, shape) for m in [0.05, 0.2, 0.35, 0.5]])
    seeds = [3, 4, 5, 6]
    kw = dict(radii=[0.0, 0.25], n0=20, n=3000, alpha=0.01)
    a = SmoothedClassifier(model, sigma=0.25, batch_size=1000).certify_adaptive(x, seeds, **kw)  # type: ignore[arg-type]
    b = SmoothedClassifier(model, sigma=0.25, batch_size=7, max_group=1).certify_adaptive(x, seeds, **kw)  # type: ignore[arg-type]
    assert a == b
    assert SmoothedClassifier(model, sigma=0.25).certify_adaptive(x[2:3], seeds[2:3], **kw)[0] == a[2]  # type: ignore[arg-type]


def test_check_sampling_mode() -> None:
    model, data = margin_data(0.6, n=6)
    raw = {"sigmas": [0.25], "n0": 50, "n": 20_000, "num_points": 6, "radii": [0, 0.25, 0.5], "attack": False, "predict_n": 200}
    fixed = run_check(model, data, {**raw, "sampling": "fixed"})
    adapt = run_check(model, data, {**raw, "sampling": "adaptive"})
    key = "certify/sigma_0.25"
    for r in ["0", "0.25", "0.5"]:
        assert adapt.metrics[f"{key}/certified_accuracy_at_r_{r}"] == fixed.metrics[f"{key}/certified_accuracy_at_r_{r}"]
    assert fixed.metrics[f"{key}/mean_samples"] == 50 + 20_000
    assert adapt.metrics[f"{key}/mean_samples"] * 5 < 50 + 20_000
    assert "confidence sequence" in adapt.definitions[f"{key}/certified_accuracy_at_r_0.5"]
    assert adapt.params["sampling"] == "adaptive"
    with pytest.raises(SuiteError, match="sampling"):
        CHECKS.get("certify").parse_params({"sampling": "sequential"})


def test_certify_command_sampling_option(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from robustlab.cli import main
    from robustlab.scorecard import Scorecard

    out = tmp_path / "run"
    r = CliRunner().invoke(main, ["certify", "--model", "zoo:digits-cnn", "--sigma", "0.25", "--n", "5000", "--n0", "30", "--sampling", "adaptive",
                                  "--num-points", "6", "--no-attack", "--predict-n", "100", "--device", "cpu", "--out", str(out),
                                  "--no-mlflow", "--no-report", "--radii", "0,0.25"])
    assert r.exit_code == 0, r.output
    card = Scorecard.read(out / "scorecard.json")
    m = card.metrics()
    assert m["certify/sigma_0.25/mean_samples"] < 5030
    bad = CliRunner().invoke(main, ["certify", "--model", "zoo:digits-cnn", "--sampling", "sequential", "--out", str(tmp_path)])
    assert bad.exit_code == 2


def test_decided_settles_wrong_points_on_the_abstention_threshold_alone() -> None:
    thr = sequential.radius_thresholds([0.0, 0.25, 0.5], 0.25)
    lower, upper = np.array([0.7, 0.7, 0.3, 0.3, 0.45]), np.array([0.95, 0.95, 0.45, 0.45, 0.6])
    settle = np.array([False, True, False, True, True])
    assert sequential.decided(lower, upper, thr, reachable=0.999).tolist() == [False, False, True, True, False]
    assert sequential.decided(lower, upper, thr, reachable=0.999, settle_only=settle).tolist() == [False, True, True, True, False]


def test_settle_wrong_stops_wrong_points_early_and_changes_no_answer() -> None:
    """With labels, a point whose selected class is not its label stops once its abstention is
    decided. Its class, abstention and majority vote equal the label-blind run's; points whose
    selected class is their label get the identical certificate; wrong confident points use far
    fewer samples."""
    shape = (1, 4, 4)
    model, net = linear_model(shape, seed=4)
    sigma, n, alpha = 0.25, 20_000, 0.001
    radii = [0.0, 0.25, 0.5, 0.75]
    margins = [0.12, 0.4, 0.62, 2.0, -0.3, 0.9, -0.8, 0.02, 0.0]
    x = torch.cat([point_with_margin(net, m, shape) for m in margins])
    side = [int(m > 0) for m in margins]
    labels = [s if i % 2 == 0 else 1 - s for i, s in enumerate(side)]  # every other point is labelled wrongly
    seeds = list(range(20, 20 + len(margins)))
    smooth = SmoothedClassifier(model, sigma=sigma, batch_size=20_000)
    blind = smooth.certify_adaptive(x, seeds, radii=radii, n0=100, n=n, alpha=alpha)
    aware = smooth.certify_adaptive(x, seeds, radii=radii, n0=100, n=n, alpha=alpha, labels=torch.tensor(labels))
    wrong = 0
    for y, b, a in zip(labels, blind, aware):
        assert (a.prediction, a.selected, a.majority) == (b.prediction, b.selected, b.majority)
        if b.selected == y:
            assert a == b
        else:
            wrong += 1
            assert a.n <= b.n and a.radius <= b.radius and (a.p_lower >= 0.5) == (b.p_lower >= 0.5)
    assert wrong >= 3
    # the confidently wrong points (|margin| >= 0.4) stop at the first look instead of chasing larger radii
    for m, y, b, a in zip(margins, labels, blind, aware):
        if b.selected != y and abs(m) >= 0.4:
            assert a.n == sequential.FIRST_LOOK < b.n, (m, a.n, b.n)
    with pytest.raises(Exception, match="one label per image"):
        smooth.certify_adaptive(x, seeds, radii=radii, n0=100, n=n, alpha=alpha, labels=labels[:-1])


def test_check_settle_wrong_keeps_every_metric_but_the_sample_count() -> None:
    model, data = margin_data(0.6, n=8)
    data.y[::4] = 1 - data.y[::4]  # two points whose (confident) class is not their label
    raw = {"sigmas": [0.25], "n0": 50, "n": 20_000, "num_points": 8, "radii": [0, 0.25, 0.5], "attack": False, "predict_n": 200,
           "sampling": "adaptive"}
    aware = run_check(model, data, raw)
    blind = run_check(model, data, {**raw, "settle_wrong": False})
    key = "certify/sigma_0.25"
    for name, v in blind.metrics.items():
        if name != f"{key}/mean_samples" and "average_certified_radius" not in name:
            assert aware.metrics[name] == v, name
    assert aware.metrics[f"{key}/average_certified_radius"] == pytest.approx(blind.metrics[f"{key}/average_certified_radius"])
    assert aware.metrics[f"{key}/mean_samples"] < blind.metrics[f"{key}/mean_samples"]
    assert "selected class is not its label" in aware.definitions[f"{key}/certified_accuracy_at_r_0.5"]
    assert "selected class is not its label" not in blind.definitions[f"{key}/certified_accuracy_at_r_0.5"]


def test_budgets_that_can_never_answer_are_refused() -> None:
    """Adaptive CERTIFY's confidence sequence needs more samples than Clopper-Pearson to reach 1/2 on all
    successes (13 rather than 10 at alpha 0.001), PREDICT needs 2 * 0.5^n <= alpha, and an alpha in the
    subnormal floats makes scipy's Beta quantile exceed the exact bound: each is a usage error, not a run
    that certifies nothing (and blames the model) or reports a radius the data do not support."""
    cls = CHECKS.get("certify")
    lower, _ = confidence_sequence([12, 13], [12, 13], 0.001)
    assert lower[0] < 0.5 <= lower[1]
    assert sequential.min_certify_samples(0.001) == 13
    with pytest.raises(SuiteError, match=r"n=12 cannot certify any point at alpha=0.001 with adaptive sampling; use n >= 13"):
        cls.parse_params({"n": 12, "sampling": "adaptive", "predict_n": 100})
    assert cls.parse_params({"n": 13, "sampling": "adaptive", "predict_n": 100}).n == 13
    assert cls.parse_params({"n": 12, "sampling": "fixed", "predict_n": 100}).n == 12  # Clopper-Pearson: 10 suffice
    with pytest.raises(SuiteError, match=r"predict_n=10 \(n, as predict_n is 0\) leaves PREDICT no answer .* use predict_n >= 11"):
        cls.parse_params({"n": 10})
    with pytest.raises(SuiteError, match=r"predict_n=5 leaves PREDICT no answer"):
        cls.parse_params({"n": 1000, "predict_n": 5})
    with pytest.raises(SuiteError, match="alpha must be in"):
        cls.parse_params({"alpha": 5e-324, "n": 100000})
    from robustlab.smoothing.bounds import lower_confidence_bound

    with pytest.raises(ValueError, match="alpha"):
        lower_confidence_bound(1999, 2000, 5e-324)
    with pytest.raises(ValueError, match="0..n"):
        lower_confidence_bound(12, 10, 0.001)


def test_adaptive_sampling_decides_the_interval_radii_too() -> None:
    """The robustness interval's lower end at r is the certified accuracy at r: with r among the interval
    radii but not the requested ones, sampling stopped before deciding it, and the lower end came out low."""
    model, data = margin_data(0.45, n=6)
    raw = {"sigmas": [0.25], "n0": 50, "n": 20_000, "num_points": 6, "predict_n": 200, "sampling": "adaptive", "attack_steps": 2,
           "attack_samples": 4, "attack_n": 100, "base_attack": False, "interval_radii": [0.25]}
    only_interval = run_check(model, data, {**raw, "radii": [0.0]})
    both = run_check(model, data, {**raw, "radii": [0.0, 0.25]})
    key = "certify/sigma_0.25"
    assert both.metrics[f"{key}/certified_accuracy_at_r_0.25"] == 1.0  # pA = Phi(1.8): every point certifiable at 0.25
    assert only_interval.metrics[f"{key}/interval_at_r_0.25/lower"] == both.metrics[f"{key}/interval_at_r_0.25/lower"] == 1.0


def test_the_smoothing_api_refuses_bad_arguments_in_one_line() -> None:
    from robustlab.errors import RobustlabError

    model, data = margin_data(0.45, n=4)
    with pytest.raises(RobustlabError, match="positive finite"):
        SmoothedClassifier(model, sigma=float("inf"))
    smooth = SmoothedClassifier(model, sigma=0.25, batch_size=100)
    x = data.images(slice(0, 4))
    with pytest.raises(RobustlabError, match="3 seeds for 4 images"):
        smooth.certify_adaptive(x, [1, 2, 3], radii=[0.0], n0=20, n=200)
    with pytest.raises(ValueError, match="radii must be non-negative finite"):
        smooth.certify_adaptive(x, [1, 2, 3, 4], radii=[0.0, float("nan")], n0=20, n=200)


def test_noise_that_overflows_the_model_is_reported_with_its_sigma() -> None:
    from robustlab.errors import ModelOutputError
    from robustlab.models import load_model

    model = load_model("zoo:digits-cnn", device="cpu")
    smooth = SmoothedClassifier(model, sigma=1e300, batch_size=50)
    with pytest.raises(ModelOutputError, match=r"noisy inputs \(sigma 1e\+300\)"):
        smooth.votes(torch.rand(2, 1, 8, 8), [1, 2], num=20, phase="select")
