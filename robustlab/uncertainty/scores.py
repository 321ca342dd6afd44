"""Confidence scores of a classifier's prediction, computed from its logits.

Every score maps logits (N, K) to a confidence (N,) where **higher means more confident that the
predicted class is right** (the opposite orientation of :mod:`robustlab.ood`, where higher means
more OOD). Scores are registered in :data:`CONFIDENCE_SCORES`: one function and one decorator add one.

References: Hendrycks & Gimpel 2017 (MSP); Hendrycks et al. 2022 (max-logit); Liu et al. 2020
    (energy); Granese et al. 2021 (DOCTOR, D_alpha); Lakshminarayanan et al. 2017 (entropy).
"""

from __future__ import annotations

from typing import Callable, cast

import numpy as np

from ..registry import Registry

ScoreFn = Callable[[np.ndarray], np.ndarray]

#: Confidence scores by name; each maps logits (N, K) to confidence (N,), higher = more confident.
CONFIDENCE_SCORES: "Registry[ScoreFn]" = Registry("confidence score", group="robustlab.confidence_scores")


def as_logits(logits: np.ndarray) -> np.ndarray:
    """``logits`` as a finite float64 (N, K) array; raises ``ValueError`` otherwise."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] < 2:
        raise ValueError(f"logits must have shape (N, K) with K >= 2, got {z.shape}")
    if not np.isfinite(z).all():
        raise ValueError("logits must be finite")
    return z


def logsumexp(z: np.ndarray) -> np.ndarray:
    """Row-wise log(sum(exp(z))) of (N, K), computed stably -> (N,)."""
    m = z.max(axis=1, keepdims=True)
    return cast("np.ndarray", (m + np.log(np.exp(z - m).sum(axis=1, keepdims=True)))[:, 0])


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of logits / temperature: (N, K) -> (N, K) probabilities."""
    z = as_logits(logits) / float(temperature)
    return cast("np.ndarray", np.exp(z - logsumexp(z)[:, None]))


@CONFIDENCE_SCORES.register("msp")
def msp(logits: np.ndarray) -> np.ndarray:
    """Maximum softmax probability max_k p_k."""
    return cast("np.ndarray", softmax(logits).max(axis=1))


@CONFIDENCE_SCORES.register("max_logit")
def max_logit(logits: np.ndarray) -> np.ndarray:
    """Largest logit max_k z_k."""
    return cast("np.ndarray", as_logits(logits).max(axis=1))


@CONFIDENCE_SCORES.register("energy")
def negative_energy(logits: np.ndarray) -> np.ndarray:
    """Negative free energy log sum_k exp(z_k) (temperature 1)."""
    return logsumexp(as_logits(logits))


@CONFIDENCE_SCORES.register("doctor")
def doctor(logits: np.ndarray) -> np.ndarray:
    """DOCTOR's D_alpha turned into a confidence: -(1 - g) / g with g = sum_k p_k^2 (Gini).

    D_alpha = (1 - g) / g is DOCTOR's rejection score (higher = more likely wrong); its negation
    ranks exactly like g.
    """
    g = (softmax(logits) ** 2).sum(axis=1)
    return cast("np.ndarray", -(1.0 - g) / g)


@CONFIDENCE_SCORES.register("entropy")
def negative_entropy(logits: np.ndarray) -> np.ndarray:
    """Negative Shannon entropy sum_k p_k log p_k (nats) of the softmax."""
    z = as_logits(logits)
    logp = z - logsumexp(z)[:, None]
    return cast("np.ndarray", (np.exp(logp) * logp).sum(axis=1))


def confidence(name: str, logits: np.ndarray) -> np.ndarray:
    """The registered score ``name`` on ``logits`` (N, K) -> (N,) float64."""
    return np.asarray(CONFIDENCE_SCORES.get(name)(logits), dtype=np.float64)
