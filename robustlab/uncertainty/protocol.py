"""The evaluation protocol of the ``uncertainty`` check, on arrays: fit everything on validation
logits, then measure any condition (clean, corrupted, shifted, adversarial, OOD) with the fitted
state. Torch-free; the check turns :class:`Measurement` rows into scorecard keys.

Validation data are split in two seeded halves: temperature scaling and the selective-prediction
thresholds are fitted on the first, the conformal quantiles on the second (the conformal scores use
the temperature-scaled probabilities, so the calibration half must not have been used to fit T).
Test data never enter a fit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..stats import wilson_interval
from . import calibration as cal
from . import conformal as cp
from . import failure as fd
from . import selective as sel
from .scores import as_logits, confidence


@dataclass(frozen=True)
class Settings:
    scores: tuple[str, ...] = ("msp", "max_logit", "energy", "doctor", "entropy")
    coverages: tuple[float, ...] = (0.8, 0.9, 0.95)
    target_risks: tuple[float, ...] = (0.01, 0.05)
    methods: tuple[str, ...] = ("lac", "aps", "raps")
    levels: tuple[float, ...] = (0.9, 0.95)
    randomized: bool = False
    raps_lam: float = 0.01
    raps_k_reg: int = 1
    ece_bins: int = 15
    n_boot: int = 200


@dataclass(frozen=True)
class Fitted:
    """State fitted on validation data only."""

    temperature: float
    n_temperature: int
    n_conformal: int
    coverage_thresholds: dict[tuple[str, float], float] = field(default_factory=dict)
    risk_thresholds: dict[tuple[str, float], float] = field(default_factory=dict)
    conformal: dict[tuple[str, float], cp.ConformalCalibration] = field(default_factory=dict)
    errors_in_temperature_half: int = 0


@dataclass(frozen=True)
class Measurement:
    """One number: ``head`` segments (family, method, ...), the metric name, value, interval, n."""

    head: tuple[str, ...]
    metric: str
    value: float
    low: float | None = None
    high: float | None = None
    method: str = ""
    n: int | None = None


def level_segment(level: float) -> str:
    return f"{float(level):g}"


def _opts(s: Settings, method: str) -> dict[str, float]:
    return {"lam": s.raps_lam, "k_reg": s.raps_k_reg} if method == "raps" else {}


def fit(val_logits: np.ndarray, val_labels: np.ndarray, s: Settings, *, rng: np.random.Generator) -> Fitted:
    """Fit temperature, selective thresholds (first half) and conformal quantiles (second half).

    Args:
        val_logits: (N, K) validation logits, N >= 4. val_labels: (N,) int.
        rng: seeded generator for the split (and randomised conformal scores).
    """
    z = as_logits(val_logits)
    y = np.asarray(val_labels, dtype=np.int64).reshape(-1)
    if y.size < 4:
        raise ValueError("the uncertainty protocol needs at least 4 validation points")
    perm = rng.permutation(y.size)
    a, b = np.sort(perm[: y.size // 2]), np.sort(perm[y.size // 2 :])
    t = cal.fit_temperature(z[a], y[a])
    correct_a = z[a].argmax(1) == y[a]
    cov_t, risk_t = {}, {}
    for name in s.scores:
        c = confidence(name, z[a])
        for cv in s.coverages:
            cov_t[(name, cv)] = sel.threshold_for_coverage(c, cv)
        for r in s.target_risks:
            risk_t[(name, r)] = sel.threshold_for_risk(c, correct_a, r)
    pb = cal.scaled_probs(z[b], t)
    conf = {(m, lv): cp.calibrate(m, pb, y[b], 1 - lv, randomized=s.randomized, rng=rng, **_opts(s, m)) for m in s.methods for lv in s.levels}
    return Fitted(t, int(a.size), int(b.size), cov_t, risk_t, conf, int((~correct_a).sum()))


def _wilson(head: tuple[str, ...], metric: str, k: int, n: int) -> Measurement:
    ci = wilson_interval(k, n)
    return Measurement(head, metric, k / n if n else math.nan, ci.low, ci.high, "wilson", n)


def _boot(head: tuple[str, ...], metric: str, stat: Callable[..., float], c: np.ndarray, ok: np.ndarray, s: Settings, rng: np.random.Generator) -> Measurement:
    v = stat(c, ok)
    lo, hi = fd.bootstrap_interval(stat, c, ok, rng=rng, n_boot=s.n_boot) if s.n_boot > 0 and not math.isnan(v) else (None, None)
    return Measurement(head, metric, v, lo, hi, "bootstrap" if lo is not None else "", int(c.size))


def conformal_sets(fitted: Fitted, probs: np.ndarray, s: Settings, method: str, level: float, *, set_seed: int) -> np.ndarray:
    """Prediction sets (N, K) of one calibrated method; randomised sets draw u from ``set_seed``
    (the same u for every method and level: common random numbers)."""
    return cp.prediction_sets(fitted.conformal[(method, level)], probs, randomized=s.randomized, rng=np.random.default_rng(set_seed), **_opts(s, method))


def measure(logits: np.ndarray, labels: np.ndarray | None, fitted: Fitted, s: Settings, *, scores: tuple[str, ...], rng: np.random.Generator, set_seed: int = 0, calibration: bool = True) -> list[Measurement]:
    """Every metric of one condition. ``labels=None`` marks OOD data (conformal non-empty rate,
    selective acceptance rate). ``scores`` limits failure/selective metrics to some scores; ``rng``
    drives the bootstrap, ``set_seed`` the randomised conformal sets."""
    z = as_logits(logits)
    n = z.shape[0]
    out: list[Measurement] = []
    probs_ts = cal.scaled_probs(z, fitted.temperature)
    if labels is None:
        for name in scores:
            c = confidence(name, z)
            for cv in s.coverages:
                out.append(_wilson(("selective", name, f"coverage_{cv:g}"), "acceptance", int((c >= fitted.coverage_thresholds[(name, cv)]).sum()), n))
        for m, lv in fitted.conformal:
            ev = cp.evaluate_sets(conformal_sets(fitted, probs_ts, s, m, lv, set_seed=set_seed), None)
            out.append(_wilson(("conformal", m, level_segment(lv)), "nonempty_rate", int(round((1 - ev.empty_rate) * n)), n))
            out.append(Measurement(("conformal", m, level_segment(lv)), "mean_set_size", ev.mean_set_size, n=n))
        return out
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    ok = z.argmax(1) == y
    out.append(_wilson(("model",), "accuracy", int(ok.sum()), n))
    for name in scores:
        c = confidence(name, z)
        fm = fd.failure_metrics(c, ok)
        out.append(_boot(("failure", name), "auroc", fd.auroc, c, ok, s, rng))
        out.append(Measurement(("failure", name), "aupr_error", fm.aupr_error, n=n))
        out.append(Measurement(("failure", name), "fpr_at_95tpr", fm.fpr_at_95tpr, n=n))
        out.append(_boot(("selective", name), "aurc", sel.aurc, c, ok, s, rng))
        out.append(Measurement(("selective", name), "eaurc", sel.eaurc(c, ok), n=n))
        for tag, thresholds, targets in (("coverage", fitted.coverage_thresholds, s.coverages), ("risk", fitted.risk_thresholds, s.target_risks)):
            for t in targets:
                r = sel.apply_threshold(c, ok, thresholds[(name, t)])
                head = ("selective", name, f"{tag}_{t:g}")
                out.append(_wilson(head, "coverage", r.n_accepted, n))
                out.append(_wilson(head, "risk", r.n_errors_accepted, r.n_accepted) if r.n_accepted else Measurement(head, "risk", math.nan, n=0))
    if calibration:
        for tag, p in (("raw", cal.scaled_probs(z, 1.0)), ("ts", probs_ts)):
            cm = cal.calibration_metrics(p, y, n_bins=s.ece_bins)
            for metric in ("ece", "adaptive_ece", "classwise_ece", "nll", "brier"):
                out.append(Measurement(("calibration", tag), metric, float(getattr(cm, metric)), n=n))
    for m, lv in fitted.conformal:
        ev = cp.evaluate_sets(conformal_sets(fitted, probs_ts, s, m, lv, set_seed=set_seed), y)
        out.append(_wilson(("conformal", m, level_segment(lv)), "coverage", ev.n_covered, n))
        out.append(Measurement(("conformal", m, level_segment(lv)), "mean_set_size", ev.mean_set_size, n=n))
        out.append(Measurement(("conformal", m, level_segment(lv)), "empty_rate", ev.empty_rate, n=n))
    return out
