"""Deep nearest neighbours on normalised penultimate features."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping, cast

import torch

from .base import DETECTORS, Detector, DetectorError, FitFeatures

if TYPE_CHECKING:
    from ..models.wrapper import RobustModel


def _normalise(f: torch.Tensor) -> torch.Tensor:
    return cast("torch.Tensor", f / f.norm(dim=1, keepdim=True).clamp_min(1e-12))


@DETECTORS.register("knn")
class KNN(Detector):
    """KNN outlier score: distance of the normalised feature z = f(x)/||f(x)|| to its k-th nearest
    neighbour among the normalised fit features.

    Fit stores the (N, D) normalised features of the in-distribution fit data (one pass). When the
    fit data has fewer than k samples, k becomes N (recorded by the check).

    Shapes: x (N, C, H, W) in ``model.bounds`` -> (N,) scores in [0, 2].

    Args:
        k: neighbour rank (Sun et al. use 50 for CIFAR-10 with the full training set).
        chunk: fit features compared per block (bounds memory to chunk x batch distances).

    References: Sun, Ming, Zhu & Li, "Out-of-Distribution Detection with Deep Nearest Neighbors",
        ICML 2022 (github.com/deeplearning-wisc/knn-ood); checked against ``pytorch_ood.detector.KNN``.
    """

    name = "knn"
    requires_fit = True

    def __init__(self, *, k: int = 50, chunk: int = 8192) -> None:
        super().__init__()
        if k < 1:
            raise DetectorError(f"KNN k must be >= 1, got {k}.")
        self.k = int(k)
        self.chunk = int(chunk)
        self.bank: torch.Tensor | None = None

    def config(self) -> dict[str, Any]:
        return {"k": self.k}

    @property
    def effective_k(self) -> int:
        return self.k if self.bank is None else min(self.k, int(self.bank.shape[0]))

    def fit_features(self, fit: FitFeatures, model: "RobustModel") -> None:
        self.bank = _normalise(fit.features.float())
        self._fitted = True

    def fit_state(self) -> dict[str, torch.Tensor]:
        self._require_fit()
        assert self.bank is not None
        return {"bank": self.bank}

    def load_fit_state(self, state: Mapping[str, torch.Tensor]) -> None:
        self.bank = state["bank"].float()
        self._fitted = True

    @torch.no_grad()
    def score(self, model: "RobustModel", x: torch.Tensor) -> torch.Tensor:
        self._require_fit()
        assert self.bank is not None
        z = _normalise(model.features(x.to(model.device)).float())
        k = self.effective_k
        best: torch.Tensor | None = None  # (n, <=k) smallest distances so far
        for s in range(0, self.bank.shape[0], self.chunk):
            d = torch.cdist(z, self.bank[s : s + self.chunk].to(z.device))
            cand = d if best is None else torch.cat([best, d], dim=1)
            best = cand.topk(min(k, cand.shape[1]), dim=1, largest=False).values
        assert best is not None
        return best.amax(dim=1)
