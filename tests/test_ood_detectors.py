"""Detector contract (every registered detector), closed forms, and agreement with pytorch-ood."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from robustlab.models.wrapper import ModelInfo, RobustModel
from robustlab.ood import DETECTORS, Detector, DetectorError, FitFeatures, create_detector, ood_metrics
from robustlab.ood.sources import synthetic_images


class _Head(nn.Module):
    """features = tanh(W1 x) (D=6), logits = W2 features + b: a tiny differentiable classifier."""

    def __init__(self, c: int = 1, hw: int = 4, k: int = 3, d: int = 6, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(c * hw * hw, d), nn.Tanh())
        self.fc = nn.Linear(d, k)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


def _tiny_model(**kw: int) -> RobustModel:
    return RobustModel(_Head(**kw), ModelInfo(spec="test", format="test", num_classes=kw.get("k", 3), input_shape=(1, 4, 4), bounds=(0.0, 1.0)))


def _fitted(name: str, model: RobustModel, x: torch.Tensor, y: torch.Tensor) -> Detector:
    det = create_detector(name)
    det.fit(model, (x, y), batch_size=64)
    return det


# -- contract over the registry -----------------------------------------------------------------
@pytest.mark.parametrize("name", DETECTORS.names())
def test_detector_contract_on_digits(name: str, digits_model: RobustModel) -> None:
    """Shape (N,), finite, batch-independent, and AUROC well above 0.5 on digits vs uniform noise."""
    from robustlab.data import load_dataset

    train = load_dataset("digits", split="train")
    test = load_dataset("digits", split="test").limit(120)
    det = create_detector(name)
    if det.requires_fit:
        with pytest.raises(DetectorError):
            det.score(digits_model, test.x[:2])
        det.fit(digits_model, train, batch_size=256)
    assert det.is_fitted
    s_id = det.score(digits_model, test.x)
    noise = synthetic_images("noise:uniform", n=120, shape=(1, 8, 8), seed=0)
    s_ood = det.score(digits_model, noise)
    assert s_id.shape == (120,) and s_ood.shape == (120,)
    assert torch.isfinite(s_id).all() and torch.isfinite(s_ood).all()
    # batched preprocessing must not mix samples: scoring in pieces gives the same scores
    pieces = torch.cat([det.score(digits_model, test.x[i : i + 7]) for i in range(0, 21, 7)])
    torch.testing.assert_close(pieces, s_id[:21], rtol=1e-4, atol=1e-5)
    assert ood_metrics(s_id.numpy(), s_ood.numpy()).auroc > 0.7


@pytest.mark.parametrize("name", DETECTORS.names())
def test_detector_fit_state_roundtrip(name: str) -> None:
    model = _tiny_model()
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(60, 1, 4, 4, generator=g), torch.arange(60) % 3
    det = _fitted(name, model, x, y)
    other = create_detector(name)
    other.load_fit_state(det.fit_state())
    torch.testing.assert_close(other.score(model, x[:10]), det.score(model, x[:10]))


# -- closed forms -----------------------------------------------------------------------------
def _logit_model(logits: torch.Tensor) -> tuple[RobustModel, torch.Tensor]:
    """A model whose logits for input i are the given row (input = one-hot index image)."""
    n, k = logits.shape
    lin = nn.Linear(n, k, bias=False)
    with torch.no_grad():
        lin.weight.copy_(logits.T)
    net = nn.Sequential(nn.Flatten(), lin)
    model = RobustModel(net, ModelInfo(spec="test", format="test", num_classes=k, input_shape=(1, 1, n)))
    return model, torch.eye(n).view(n, 1, 1, n)


def test_msp_maxlogit_energy_closed_form() -> None:
    rows = torch.tensor([[0.0, 0.0, 0.0], [5.0, 1.0, -2.0], [100.0, 99.0, -50.0], [-3.0, -3.0, 2.0]], dtype=torch.float64)
    model, x = _logit_model(rows.float())
    for i, r in enumerate(rows.numpy()):
        e = np.exp(r - r.max())
        msp = -(e / e.sum()).max()
        assert float(create_detector("msp").score(model, x[i : i + 1])) == pytest.approx(msp, rel=1e-6)
        assert float(create_detector("maxlogit").score(model, x[i : i + 1])) == pytest.approx(-r.max(), rel=1e-6)
        for t in (1.0, 2.0, 0.5):
            energy = -t * (r.max() / t + np.log(np.exp((r - r.max()) / t).sum()))
            assert float(create_detector("energy", temperature=t).score(model, x[i : i + 1])) == pytest.approx(energy, rel=1e-5)
    assert float(create_detector("msp").score(model, x[:1])) == pytest.approx(-1 / 3)  # uniform logits
    with pytest.raises(DetectorError):
        create_detector("energy", temperature=0.0)


def test_odin_eps0_is_tempered_msp_and_preprocessing_raises_confidence() -> None:
    model = _tiny_model()
    x = torch.rand(16, 1, 4, 4, generator=torch.Generator().manual_seed(3)) * 0.6 + 0.2
    for t in (1.0, 1000.0):
        s0 = create_detector("odin", temperature=t, eps=0.0).score(model, x)
        ref = -(model(x) / t).softmax(1).amax(1)
        torch.testing.assert_close(s0, ref)
    # the perturbation lowers -log S_yhat, so the tempered max softmax goes up (score goes down)
    s_small = create_detector("odin", temperature=1.0, eps=0.0).score(model, x)
    s_pert = create_detector("odin", temperature=1.0, eps=0.01).score(model, x)
    assert (s_pert <= s_small + 1e-6).all() and (s_pert < s_small).any()


def test_preprocessing_stays_in_bounds() -> None:
    """Perturbed inputs are clamped to model.bounds (here [-1, 2]), never to a literal [0, 1]."""
    from robustlab.ood.base import perturb

    model = RobustModel(_Head(), ModelInfo(spec="t", format="t", num_classes=3, input_shape=(1, 4, 4), bounds=(-1.0, 2.0)))
    x = torch.tensor([-1.0, 2.0, 0.5]).repeat(6)[:16].view(1, 1, 4, 4)
    d = torch.tensor([1.0, -1.0, 1.0]).repeat(6)[:16].view(1, 1, 4, 4)
    out = perturb(model, x, d, 0.1)
    assert out.min() >= -1.0 and out.max() <= 2.0
    assert float(out.view(-1)[2]) == pytest.approx(0.5 - 0.3)  # eps is a fraction of the width 3


def test_mahalanobis_fit_matches_sklearn_and_scipy() -> None:
    from scipy.spatial.distance import mahalanobis as scipy_md
    from sklearn.covariance import EmpiricalCovariance

    g = torch.Generator().manual_seed(0)
    k, d, n = 3, 5, 300
    y = torch.arange(n) % k
    f = torch.randn(n, d, generator=g) + 3 * torch.eye(k, d)[y]
    det = create_detector("mahalanobis")
    det.fit_features(FitFeatures(f, torch.zeros(n, k), y), _tiny_model())
    fn, yn = f.double().numpy(), y.numpy()
    means = np.stack([fn[yn == c].mean(0) for c in range(k)])
    prec = EmpiricalCovariance(assume_centered=False).fit(fn - means[yn]).precision_
    np.testing.assert_allclose(det.means.numpy(), means, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(det.precision.numpy(), prec, rtol=1e-4, atol=1e-5)
    from robustlab.ood.mahalanobis import squared_mahalanobis

    q = torch.randn(7, d, generator=g)
    got = squared_mahalanobis(q.double(), det.means.double(), det.precision.double()).amin(1).numpy()
    want = [min(scipy_md(qi, m, prec) ** 2 for m in means) for qi in q.double().numpy()]
    np.testing.assert_allclose(got, want, rtol=1e-4)


def test_fit_requires_data() -> None:
    with pytest.raises(DetectorError):
        create_detector("mahalanobis").fit_features(FitFeatures(torch.zeros(2, 4), torch.zeros(2, 3), torch.tensor([0, 1])), _tiny_model())


# -- agreement with pytorch-ood (optional test dependency) --------------------------------------
def test_same_scores_as_pytorch_ood() -> None:
    pood = pytest.importorskip("pytorch_ood.detector")
    model = _tiny_model()
    g = torch.Generator().manual_seed(5)
    x_fit, y_fit = torch.rand(240, 1, 4, 4, generator=g), torch.arange(240) % 3
    x = torch.rand(40, 1, 4, 4, generator=g) * 0.5 + 0.25  # away from the bounds: clamping inactive
    close = dict(rtol=2e-4, atol=1e-5)

    torch.testing.assert_close(create_detector("msp").score(model, x), pood.MaxSoftmax(model)(x), **close)
    torch.testing.assert_close(create_detector("maxlogit").score(model, x), pood.MaxLogit(model)(x), **close)
    torch.testing.assert_close(create_detector("energy").score(model, x), pood.EnergyBased(model)(x), **close)
    ours = create_detector("odin", temperature=1000.0, eps=0.002).score(model, x)
    torch.testing.assert_close(ours, pood.ODIN(model, eps=0.002, temperature=1000.0)(x).float(), **close)

    feats = model.features
    knn = _fitted("knn", model, x_fit, y_fit)
    ref_knn = pood.KNN(feats, k=50).fit_features(feats(x_fit), y_fit)
    torch.testing.assert_close(knn.score(model, x), ref_knn.predict_features(feats(x)).float(), **close)

    vim = create_detector("vim", dim=3)
    vim.fit(model, (x_fit, y_fit))
    ref_vim = pood.ViM(feats, d=3, w=model.net.fc.weight, b=model.net.fc.bias).fit_features(feats(x_fit), y_fit)
    torch.testing.assert_close(vim.score(model, x), ref_vim.predict_features(feats(x)).float(), rtol=1e-3, atol=1e-4)

    # pytorch-ood's covariance is the unnormalised sum (plus a 1e-6 ridge) and its score is half the
    # squared distance: ours = 2 N x theirs, with or without input preprocessing.
    n = x_fit.shape[0]
    for eps in (0.0, 0.003):
        maha = create_detector("mahalanobis", eps=eps)
        maha.fit(model, (x_fit, y_fit))
        ref = pood.MahalanobisODIN(feats, eps=eps).fit_features(feats(x_fit), y_fit) if eps else pood.Mahalanobis(feats).fit_features(feats(x_fit), y_fit)
        theirs = ref.predict(x) if eps else ref.predict_features(feats(x))
        torch.testing.assert_close(maha.score(model, x), (2 * n * theirs).float(), rtol=1e-3, atol=1e-3)
