"""ViM: virtual-logit matching."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, cast

import torch
from torch import nn

from .base import DETECTORS, Detector, DetectorError, FitFeatures

if TYPE_CHECKING:
    from ..models.wrapper import RobustModel


def last_linear(model: "RobustModel") -> nn.Linear:
    """The classifier head whose input is ``model.features`` (only when no feature layer is set)."""
    if model.info.feature_layer:
        raise DetectorError("ViM needs the penultimate features to be the input of the last linear layer; run it without --feature-layer.")
    if not any(isinstance(m, nn.Linear) for m in model.net.modules()):
        raise DetectorError("ViM needs a model whose last layer is nn.Linear; this model has none.")
    return model.head_linear()


def default_dim(feature_dim: int) -> int:
    """Principal-subspace size from the paper: 1000 for D >= 2048, 512 for D >= 768, else D // 2."""
    if feature_dim >= 2048:
        return 1000
    if feature_dim >= 768:
        return 512
    return max(1, feature_dim // 2)


@DETECTORS.register("vim")
class ViM(Detector):
    """ViM outlier score: alpha * ||(f(x) - u) R|| - logsumexp_c f_c(x).

    Fit (one pass): u = -pinv(W) b from the last layer (W, b); the columns of R span the residual
    space, the eigenvectors of the (uncentred about u) feature covariance outside the top ``dim``
    principal directions; alpha = mean max logit / mean residual norm over the fit data.

    Shapes: features (N, D), W (K, D), b (K,); x (N, C, H, W) in ``model.bounds`` -> (N,) scores.

    Args:
        dim: principal-subspace dimension (None: the paper's rule, see :func:`default_dim`).

    References: Wang, Li, Feng & Zhang, "ViM: Out-Of-Distribution with Virtual-logit Matching",
        CVPR 2022 (github.com/haoqiwang/vim); checked against ``pytorch_ood.detector.ViM``.
    """

    name = "vim"
    requires_fit = True

    def __init__(self, *, dim: int | None = None) -> None:
        super().__init__()
        if dim is not None and dim < 1:
            raise DetectorError(f"ViM dim must be >= 1, got {dim}.")
        self.dim = dim
        self.origin: torch.Tensor | None = None
        self.residual: torch.Tensor | None = None
        self.alpha: torch.Tensor | None = None

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim}

    def fit_features(self, fit: FitFeatures, model: "RobustModel") -> None:
        head = last_linear(model)
        w = head.weight.detach().double().cpu()
        b = head.bias.detach().double().cpu() if head.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
        f = fit.features.double()
        d = f.shape[1]
        dim = self.dim if self.dim is not None else default_dim(d)
        if dim >= d:
            raise DetectorError(f"ViM dim={dim} must be smaller than the feature dimension {d}; set vim_dim lower.")
        u = -(torch.linalg.pinv(w) @ b)
        xc = f - u
        _vals, vecs = torch.linalg.eigh(xc.T @ xc / len(f))  # ascending eigenvalues
        residual = vecs[:, : d - dim].contiguous()
        vlogit = (xc @ residual).norm(dim=1)
        alpha = fit.logits.double().amax(dim=1).mean() / vlogit.mean().clamp_min(1e-12)
        self.origin, self.residual, self.alpha = u.float(), residual.float(), alpha.float().reshape(1)
        self._fitted = True

    def fit_state(self) -> dict[str, torch.Tensor]:
        self._require_fit()
        assert self.origin is not None and self.residual is not None and self.alpha is not None
        return {"origin": self.origin, "residual": self.residual, "alpha": self.alpha}

    def load_fit_state(self, state: Mapping[str, torch.Tensor]) -> None:
        self.origin, self.residual, self.alpha = state["origin"], state["residual"], state["alpha"]
        self._fitted = True

    @torch.no_grad()
    def score(self, model: "RobustModel", x: torch.Tensor) -> torch.Tensor:
        self._require_fit()
        assert self.origin is not None and self.residual is not None and self.alpha is not None
        logits, f = model.logits_and_features(x.to(model.device))
        f = f.float()
        dev = f.device
        vlogit = ((f - self.origin.to(dev)) @ self.residual.to(dev)).norm(dim=1) * self.alpha.to(dev)
        return cast("torch.Tensor", vlogit - torch.logsumexp(logits.float(), dim=1))
