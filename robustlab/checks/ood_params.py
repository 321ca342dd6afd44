"""Parameters of the ``ood`` check (:mod:`robustlab.checks.ood`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import RobustlabError, SuiteError
from .base import Params


@dataclass(frozen=True)
class OODParams(Params):
    """Parameters of the ``ood`` check.

    Sets are data specs (any data plugin, adapted to the model's input) or the offline synthetic
    sources ``noise:gaussian``, ``noise:uniform``, ``blobs``, ``photos``; ``name=spec`` names a set.
    ``None`` means the defaults for the evaluation data's domain (``robustlab.ood.defaults``).
    ODIN/Mahalanobis hyperparameters left at ``None`` are tuned on validation data over the grids.
    ``eps`` values are fractions of the width of the model's bounds. A detector entry is a name or
    ``{name: NAME, <param>: value, ...}``: its own typed parameters (``robustlab.ood.base.
    detector_params``, validated here), which override the ``energy_*``/``odin_*``/``mahalanobis_*``/
    ``knn_k``/``vim_dim`` fields kept for the built-ins.
    """

    detectors: list[str | dict[str, Any]] = field(default_factory=lambda: ["msp", "energy"])
    near: list[str] | None = None
    far: list[str] | None = None
    shift: list[str] | None = None
    fit_data: str | None = None
    fit_limit: int | None = 10000
    val_fraction: float = 0.1
    val_limit: int | None = 1000
    tpr: float = 0.95
    ood_limit: int | None = 1000
    synthetic_n: int = 200
    energy_temperature: float = 1.0
    odin_temperature: float | None = None
    odin_eps: float | None = None
    odin_temperatures: list[float] = field(default_factory=lambda: [1.0, 10.0, 100.0, 1000.0])
    odin_eps_grid: list[float] = field(default_factory=lambda: [0.0, 0.0005, 0.001, 0.0014, 0.002, 0.003, 0.004])
    mahalanobis_eps: float | None = None
    mahalanobis_eps_grid: list[float] = field(default_factory=lambda: [0.0, 0.0005, 0.001, 0.0014, 0.002, 0.005, 0.01])
    knn_k: int = 50
    vim_dim: int | None = None
    tune_ood: str = "fgsm"
    tune_fgsm_eps: float = 0.0125
    tune_n: int = 250
    cache: bool = True

    def validate(self) -> None:
        from ..ood.base import DETECTORS, create_detector, detector_params
        from ..ood.sources import strip_name
        from ..registry import build_params

        if not self.detectors:
            raise SuiteError("ood: give at least one detector, e.g. detectors: [msp, energy].")
        specs = self.detector_specs()
        for d, kw in specs:
            if d not in DETECTORS:
                raise SuiteError(f"ood: {DETECTORS.unknown_message(d)}")
            if kw:
                build_params(detector_params(DETECTORS.get(d)), kw, what=f"ood detector {d}")
                try:  # the detector's own range checks (knn k >= 1, ...), before any model loads
                    create_detector(d, **kw)
                except RobustlabError as exc:
                    raise SuiteError(f"ood: detector {d}: {exc}") from exc
        if len({d for d, _kw in specs}) != len(specs):
            raise SuiteError("ood: a detector is listed twice in detectors; list each once.")
        if not 0 < self.tpr < 1:
            raise SuiteError(f"ood: tpr must be in (0, 1), e.g. 0.95; got {self.tpr}.")
        if not 0 < self.val_fraction < 1:
            raise SuiteError(f"ood: val_fraction must be in (0, 1), e.g. 0.1; got {self.val_fraction}.")
        for name in ("fit_limit", "ood_limit", "val_limit"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise SuiteError(f"ood: {name} must be a positive number of images or null; got {v}.")
        if self.synthetic_n < 1 or self.tune_n < 2:
            raise SuiteError("ood: synthetic_n must be >= 1 and tune_n >= 2.")
        if self.knn_k < 1 or self.energy_temperature <= 0 or (self.vim_dim is not None and self.vim_dim < 1):
            raise SuiteError("ood: knn_k must be >= 1, energy_temperature > 0 and vim_dim >= 1 (or null).")
        if not self.odin_temperatures or any(t <= 0 for t in self.odin_temperatures) or (self.odin_temperature is not None and self.odin_temperature <= 0):
            raise SuiteError("ood: ODIN temperatures must be positive (grid odin_temperatures must not be empty).")
        for grid in (self.odin_eps_grid, self.mahalanobis_eps_grid):
            if not grid or any(e < 0 or e > 1 for e in grid):
                raise SuiteError("ood: eps grids must be non-empty fractions of the bounds' width in [0, 1].")
        for e in (self.odin_eps, self.mahalanobis_eps, self.tune_fgsm_eps):
            if e is not None and not 0 <= e <= 1:
                raise SuiteError(f"ood: eps values are fractions of the bounds' width in [0, 1]; got {e}.")
        refuse_unknown_sources("ood", [*(self.near or []), *(self.far or []), *(self.shift or []), *([self.tune_ood] if self.tune_ood != "fgsm" else []),
                                       *([self.fit_data] if self.fit_data else [])])
        tests = {strip_name(s) for s in (self.near or []) + (self.far or []) + (self.shift or [])}
        if self.tune_ood != "fgsm" and strip_name(self.tune_ood) in tests:
            raise SuiteError(f"ood: tune_ood {self.tune_ood!r} is also a test set; tuning on test OOD data inflates the results. Use tune_ood: fgsm or another set.")


    def detector_specs(self) -> list[tuple[str, dict[str, Any]]]:
        """``(name, own parameters)`` of each detector entry (a name, or a mapping with ``name``); the
        parameters of a known detector are read as its fields' kinds (``k: 1e2`` is the int 100)."""
        out: list[tuple[str, dict[str, Any]]] = []
        for d in self.detectors:
            if isinstance(d, str):
                out.append((d, {}))
            elif isinstance(d, dict) and isinstance(d.get("name"), str):
                out.append((d["name"], _typed(d["name"], {k: v for k, v in d.items() if k != "name"})))
            else:
                raise SuiteError(f"ood: a detector entry is a name or a mapping with a name, e.g. {{name: knn, k: 20}}; got {d!r}.")
        return out


def _typed(name: str, own: dict[str, Any]) -> dict[str, Any]:
    """A detector entry's own parameters as its typed fields read them (unknown names and keys pass
    through, for :meth:`OODParams.validate` to refuse)."""
    if not own:
        return own
    from ..ood.base import DETECTORS, detector_params
    from ..registry import coerce_kind, params_fields

    if name not in DETECTORS:
        return own
    fields = {f.name: f for f in params_fields(detector_params(DETECTORS.get(name)))}
    return {k: coerce_kind(fields[k], v, what=f"ood detector {name}") if k in fields else v for k, v in own.items()}


def refuse_unknown_sources(prefix: str, specs: list[str]) -> None:
    """Raise :class:`SuiteError` for a set spec (``name=spec`` allowed) that is neither a synthetic
    source nor ``PLUGIN`` / ``PLUGIN:ARG`` of a known data plugin: a typo would otherwise only skip
    the set at run time, with the check still passing."""
    from ..data.plugins import DATASETS
    from ..ood.sources import is_synthetic, strip_name

    for spec in specs:
        data = strip_name(str(spec))
        plugin = data.partition(":")[0]
        if not is_synthetic(data) and plugin not in DATASETS:
            raise SuiteError(f"{prefix}: set {spec!r}: {DATASETS.unknown_message(plugin)} Or use noise:gaussian, noise:uniform, blobs or photos.")
