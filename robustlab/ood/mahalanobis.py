"""Mahalanobis distance to class-conditional Gaussians with a tied covariance."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, Sequence

import torch

from .base import DETECTORS, Detector, DetectorError, FitFeatures, input_gradient_sign, perturb

if TYPE_CHECKING:
    from ..models.wrapper import RobustModel


def squared_mahalanobis(f: torch.Tensor, means: torch.Tensor, precision: torch.Tensor) -> torch.Tensor:
    """(N, K) squared distances (f_i - mu_k)^T P (f_i - mu_k) for f (N, D), means (K, D), P (D, D)."""
    fp = f @ precision
    return (fp * f).sum(1, keepdim=True) - 2.0 * fp @ means.T + ((means @ precision) * means).sum(1)[None, :]


@DETECTORS.register("mahalanobis")
class Mahalanobis(Detector):
    """Mahalanobis outlier score on penultimate features.

    Fit (one pass over in-distribution training features f_i with labels y_i): class means mu_k and
    one tied covariance Sigma = 1/N sum_i (f_i - mu_{y_i})(f_i - mu_{y_i})^T; P = pinv(Sigma).
    Score: d(x) = min_k (f(x) - mu_k)^T P (f(x) - mu_k) (the squared distance; Lee et al.'s confidence
    is -d). Input preprocessing: x' = clamp(x - eps * (hi - lo) * sign(grad_x d_k*(x)), lo, hi) with
    k* the closest class, one backward pass on the whole batch; score = d(x').
    Only the classes present in the fit data get a mean. Single (penultimate) layer; Lee et al.'s
    multi-layer ensemble with a logistic regression is not implemented.

    Shapes: fit features (N, D); x (N, C, H, W) in ``model.bounds`` -> (N,) scores >= 0.

    Args:
        eps: preprocessing magnitude as a fraction of the bounds' width; tuned by the ood check.

    References: Lee, Lee, Lee & Shin, "A Simple Unified Framework for Detecting Out-of-Distribution
        Samples and Adversarial Attacks", NeurIPS 2018 (github.com/pokaxpoka/deep_Mahalanobis_detector);
        checked against ``pytorch_ood.detector.Mahalanobis`` (same ranking; its covariance is not
        divided by N, which rescales the distance by N).
    """

    name = "mahalanobis"
    requires_fit = True
    tunable = ("eps",)

    def __init__(self, *, eps: float = 0.0) -> None:
        super().__init__()
        if eps < 0:
            raise DetectorError(f"Mahalanobis eps must be >= 0, got {eps}.")
        self.eps = float(eps)
        self.means: torch.Tensor | None = None
        self.precision: torch.Tensor | None = None

    def config(self) -> dict[str, Any]:
        return {"eps": self.eps}

    def fit_features(self, fit: FitFeatures, model: "RobustModel") -> None:
        f = fit.features.double()
        classes = torch.unique(fit.labels)
        if len(f) <= len(classes):
            raise DetectorError(f"Mahalanobis needs more fit samples ({len(f)}) than classes ({len(classes)}); give more in-distribution training data (fit_data).")
        means = torch.stack([f[fit.labels == c].mean(0) for c in classes])
        centred = f - means[torch.searchsorted(classes, fit.labels)]
        cov = centred.T @ centred / len(f)
        self.means = means.float()
        self.precision = torch.linalg.pinv(cov, hermitian=True).float()
        self._fitted = True

    def fit_state(self) -> dict[str, torch.Tensor]:
        self._require_fit()
        assert self.means is not None and self.precision is not None
        return {"means": self.means, "precision": self.precision}

    def load_fit_state(self, state: Mapping[str, torch.Tensor]) -> None:
        self.means, self.precision = state["means"].float(), state["precision"].float()
        self._fitted = True

    def _distances(self, model: "RobustModel", x: torch.Tensor, *, exact: bool = False) -> torch.Tensor:
        assert self.means is not None and self.precision is not None
        f = model.features(x)
        dtype = torch.float64 if exact and f.device.type != "mps" else torch.float32
        f = f.to(dtype)
        return squared_mahalanobis(f, self.means.to(f.device, dtype), self.precision.to(f.device, dtype))

    def _direction(self, model: "RobustModel", x: torch.Tensor) -> torch.Tensor:
        return input_gradient_sign(x, lambda xg: self._distances(model, xg).amin(dim=1))

    def score(self, model: "RobustModel", x: torch.Tensor) -> torch.Tensor:
        return self.score_grid(model, x, [{"eps": self.eps}])[0]

    def score_grid(self, model: "RobustModel", x: torch.Tensor, grid: Sequence[Mapping[str, Any]]) -> list[torch.Tensor]:
        """One backward pass for all eps, then one forward pass per eps."""
        self._require_fit()
        x = x.to(model.device)
        direction = None
        out = []
        for g in grid:
            e = float(g.get("eps", self.eps))
            if e != 0 and direction is None:
                direction = self._direction(model, x)
            with torch.no_grad():
                xp = x if e == 0 or direction is None else perturb(model, x, direction, e)
                out.append(self._distances(model, xp, exact=True).amin(dim=1).clamp_min(0.0).float())
        return out
