"""The detector contract and the detector registry.

A detector maps images to one outlier score per image, **higher means more likely OOD**. ``fit`` is
optional (MSP, max-logit, energy and ODIN need none); detectors that need in-distribution statistics
(Mahalanobis, KNN, ViM) set ``requires_fit`` and implement :meth:`Detector.fit_features`, so that one
pass over the fit data serves every detector (:func:`extract_fit_features`).

Input preprocessing (ODIN, Mahalanobis) goes through :func:`input_gradient_sign` and
:func:`perturb`: one forward and one backward pass on the whole batch, gradients with respect to the
input only (the wrapper freezes the parameters), perturbed inputs clamped to ``model.bounds``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Iterable, Mapping, Sequence

import torch

from ..errors import RobustlabError
from ..registry import Registry

if TYPE_CHECKING:
    from ..data.base import Dataset
    from ..models.wrapper import RobustModel

#: All detectors by name: one module per detector in this package, registered with
#: ``@DETECTORS.register("name")``; third-party detectors come through the entry-point group ``robustlab.detectors``.
DETECTORS: "Registry[type[Detector]]" = Registry("detector", group="robustlab.detectors", package="robustlab.ood")


class DetectorError(RobustlabError):
    """A detector cannot run as configured (not fitted, unsuitable model, too little fit data)."""


@dataclass(frozen=True)
class FitFeatures:
    """In-distribution statistics from one pass over the fit data.

    Attributes:
        features: (N, D) penultimate features (``model.logits_and_features``).
        logits: (N, K) logits.
        labels: (N,) int64 labels.
    """

    features: torch.Tensor
    logits: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@torch.no_grad()
def extract_fit_features(model: "RobustModel", batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> FitFeatures:
    """One forward pass over ``(x (B,C,H,W), y (B,))`` batches -> :class:`FitFeatures` on the CPU.
    A model whose features cannot be read (TorchScript) raises :class:`DetectorError` before any pass."""
    from ..models.wrapper import FeaturesUnavailable

    feats, logits, labels = [], [], []
    dev = model.device
    try:
        for x, y in batches:
            lo, f = model.logits_and_features(x.to(dev))
            feats.append(f.float().cpu())
            logits.append(lo.float().cpu())
            labels.append(y.to(torch.int64).cpu())
    except FeaturesUnavailable as exc:  # raised on the first batch, before its forward pass
        raise DetectorError(str(exc)) from exc
    if not feats:
        raise DetectorError("no fit data: give in-distribution training images (the data's train split or the fit_data parameter).")
    return FitFeatures(torch.cat(feats), torch.cat(logits), torch.cat(labels))


def dataset_batches(data: "Dataset", batch_size: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
    for _s, x, y in data.batches(batch_size):
        yield x, y


def input_gradient_sign(x: torch.Tensor, loss_fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """sign(grad_x sum_i loss_i(x)) for the whole batch in one backward pass, input gradient only.

    Args:
        x: (N, C, H, W) inputs.
        loss_fn: maps (N, C, H, W) to (N,) per-sample losses; samples must not interact (eval mode).
    Returns:
        (N, C, H, W) tensor of -1, 0, +1.
    """
    with torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)
        loss = loss_fn(xg)
        (grad,) = torch.autograd.grad(loss.sum(), xg)
    return grad.sign()


def perturb(model: "RobustModel", x: torch.Tensor, direction: torch.Tensor, eps: float) -> torch.Tensor:
    """``clamp(x - eps * (hi - lo) * direction, lo, hi)``: ``eps`` is a fraction of the bounds' width."""
    lo, hi = model.bounds
    if eps == 0:
        return x
    return (x - eps * (hi - lo) * direction).clamp(lo, hi)


class Detector(ABC):
    """Base class of OOD detectors: ``score(model, x) -> (N,)``, higher = more likely OOD.

    Subclasses set ``name`` and implement :meth:`score`; detectors that need in-distribution
    statistics set ``requires_fit = True`` and implement :meth:`fit_features`, :meth:`fit_state`
    and :meth:`load_fit_state` (tensors only, so fitted statistics can be cached as safetensors).
    Detectors with hyperparameters tuned on validation data list them in ``tunable`` and may
    override :meth:`score_grid` to share work between grid points. Hyperparameters are keyword-only
    ``__init__`` arguments with defaults: they are the detector's typed parameters
    (:func:`detector_params`), so a new detector needs no field anywhere else.
    """

    name: ClassVar[str] = ""
    requires_fit: ClassVar[bool] = False
    tunable: ClassVar[tuple[str, ...]] = ()
    #: True for detectors whose score is a function of the logits alone (MSP, energy, max-logit):
    #: they implement :meth:`score_logits`, and the OOD check scores all of them from one forward pass.
    logits_only: ClassVar[bool] = False

    def __init__(self) -> None:
        self._fitted = not self.requires_fit

    # -- configuration ---------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """Hyperparameters (recorded in the scorecard and part of the fit-cache key)."""
        return {}

    def set_params(self, **params: Any) -> None:
        """Set tunable hyperparameters (used by the validation grid search)."""
        for k, v in params.items():
            if k not in self.tunable:
                raise DetectorError(f"{self.name} has no tunable parameter {k!r}; tunable: {', '.join(self.tunable) or 'none'}.")
            setattr(self, k, v)

    # -- fitting ---------------------------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return self._fitted

    def fit(self, model: "RobustModel", data: "Dataset | tuple[torch.Tensor, torch.Tensor]", *, batch_size: int = 256) -> "Detector":
        """Fit on in-distribution data: a :class:`Dataset` or a tensor pair ``(x (N,C,H,W), y (N,))``."""
        if not self.requires_fit:
            return self
        if isinstance(data, tuple):
            x, y = data
            batches: Iterable[tuple[torch.Tensor, torch.Tensor]] = ((x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, x.shape[0], batch_size))
        else:
            batches = dataset_batches(data, batch_size)
        self.fit_features(extract_fit_features(model, batches), model)
        return self

    def fit_features(self, fit: FitFeatures, model: "RobustModel") -> None:
        """Fit from precomputed features; detectors with ``requires_fit`` override this."""
        self._fitted = True

    def fit_state(self) -> dict[str, torch.Tensor]:
        return {}

    def load_fit_state(self, state: Mapping[str, torch.Tensor]) -> None:
        self._fitted = True

    def _require_fit(self) -> None:
        if not self._fitted:
            raise DetectorError(f"detector {self.name!r} must be fitted on in-distribution data before scoring; call fit() first.")

    # -- scoring ---------------------------------------------------------------------------
    @abstractmethod
    def score(self, model: "RobustModel", x: torch.Tensor) -> torch.Tensor:
        """Outlier scores (N,) for inputs x (N, C, H, W) in ``model.bounds``; higher = more OOD."""

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Scores (N,) from fp32 logits (N, K); only for ``logits_only`` detectors, where
        ``score(model, x)`` must equal ``score_logits(model(x).float())``."""
        raise DetectorError(f"detector {self.name!r} needs the model, not only its logits; call score(model, x).")

    def score_grid(self, model: "RobustModel", x: torch.Tensor, grid: Sequence[Mapping[str, Any]]) -> list[torch.Tensor]:
        """Scores (N,) for each hyperparameter setting of ``grid``; restores the current setting."""
        saved = {k: getattr(self, k) for k in self.tunable}
        out = []
        try:
            for g in grid:
                self.set_params(**g)
                out.append(self.score(model, x))
        finally:
            for k, v in saved.items():
                setattr(self, k, v)
        return out


def detector_params(cls: type[Detector]) -> type:
    """A detector's typed hyperparameters: its ``Params`` dataclass if it declares one, else a frozen
    dataclass of the keyword parameters of its ``__init__`` (``def __init__(self, *, k: int = 50)``).
    A suite sets them per detector (``detectors: [msp, {name: knn, k: 20}]``), validated against this."""
    from ..registry import signature_params

    declared = getattr(cls, "Params", None)
    return declared if isinstance(declared, type) else signature_params(cls)


def create_detector(name: str, **kwargs: Any) -> Detector:
    """Instantiate the detector registered as ``name`` with the keyword hyperparameters it accepts
    (a plugin detector without, e.g., ``temperature`` simply does not receive it)."""
    import inspect

    cls = DETECTORS.get(name)
    sig = inspect.signature(cls.__init__)
    if not any(q.kind is q.VAR_KEYWORD for q in sig.parameters.values()):
        kwargs = {k: v for k, v in kwargs.items() if k in sig.parameters}
    return cls(**kwargs)
