"""The certify pipeline: randomized-smoothing certification of one model, as a one-check suite.

:class:`CertifyOptions` are the ``certify`` check's parameters as the ``robustlab certify`` command
takes them; :func:`certification_suite` builds the one-entry :class:`~robustlab.suite.Suite`
directly (validated by the check, no YAML round trip) and :func:`certify` runs it through the
evaluate pipeline, so the scorecard, resume, tracking and the report work as for ``evaluate``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..runner import RunConfig
from ..scorecard import Scorecard
from ..suite import Suite, build_suite

__all__ = ["CertifyOptions", "certification_suite", "certify"]


@dataclass(frozen=True)
class CertifyOptions:
    """The ``robustlab certify`` options that become the ``certify`` check's parameters (validated by the
    check's own ``CertifyParams`` when the suite is built; see ``robustlab certify --help``)."""

    sigmas: tuple[float, ...] = ()  # empty: the data set's standard levels
    n: int = 100_000
    n0: int = 100
    alpha: float = 0.001
    sampling: str = "fixed"
    settle_wrong: bool = True
    num_points: int = 500
    radii: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
    predict_n: int = 0
    attack: bool = True
    interval_radii: tuple[float, ...] = (0.25, 0.5, 1.0)
    attack_steps: int = 20
    attack_samples: int = 32
    attack_n: int = 1000
    base_attack: bool = True
    noise_batch_size: int = 0  # the check's ``batch_size``
    collapse_ratio: float = 0.5

    def check_params(self) -> dict[str, Any]:
        """As the check's ``params`` mapping (the names a suite YAML uses)."""
        out = dataclasses.asdict(self)
        out["batch_size"] = out.pop("noise_batch_size")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}


def certification_suite(params: CertifyOptions) -> Suite:
    """The one-check suite of ``robustlab certify`` (validated before any model is loaded)."""
    return build_suite("certify", [("certify", params.check_params())], description="robustlab certify: randomized smoothing",
                       source="robustlab certify")


def certify(cfg: RunConfig) -> Scorecard:
    """Run ``cfg`` (whose suite is :func:`certification_suite`) through the evaluate pipeline."""
    from .evaluate import evaluate

    return evaluate(cfg)
