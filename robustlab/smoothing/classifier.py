"""PREDICT and CERTIFY for a Gaussian-smoothed classifier (Cohen, Rosenfeld & Kolter 2019).

The smoothed classifier is ``g(x) = argmax_c P(f(x + delta) = c)``, ``delta ~ N(0, sigma^2 I)``, with
``f`` the base classifier (a :class:`~robustlab.models.wrapper.RobustModel`: inputs in
``model.bounds``, normalisation inside its forward pass). The noise is added in that input space and
noisy inputs are not clamped to the bounds, exactly as in the reference implementation.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from ..errors import RobustlabError
from ..seeding import derive_seed
from .bounds import ALPHA_MIN, certified_radius, lower_confidence_bound, predict_pvalue
from .sampling import count_votes, fast_classifier, same_function
from .sequential import adaptive_estimate, radius_thresholds

log = logging.getLogger(__name__)

#: The class index reported when the smoothed classifier abstains.
ABSTAIN = -1


@dataclass(frozen=True)
class Certificate:
    """CERTIFY's answer for one input.

    Attributes:
        prediction: the certified class, or ``ABSTAIN`` (-1) when ``p_lower < 0.5``.
        radius: certified L2 radius (0 when abstaining), in input units.
        p_lower: one-sided (1 - alpha) Clopper-Pearson lower bound on the top-class probability.
        count: votes for the selected class among the ``n`` estimation samples.
        selected: the class chosen with the ``n0`` selection samples (kept when abstaining).
        n: estimation samples (with adaptive sampling: the number used, at most the cap).
        majority: the class with most estimation votes (the Monte-Carlo estimate of g(x), no
            abstention); used for empirical (attack) evaluation, not for the certificate.
    """

    prediction: int
    radius: float
    p_lower: float
    count: int
    n: int
    majority: int
    selected: int

    @property
    def abstained(self) -> bool:
        return self.prediction == ABSTAIN


@dataclass(frozen=True)
class Prediction:
    """PREDICT's answer for one input: the class, or ``ABSTAIN`` when the top two are not told apart.

    Attributes:
        prediction: the class, or ``ABSTAIN`` (-1).
        count_top: votes of the most frequent class.
        count_second: votes of the runner-up class.
        p_value: two-sided binomial test of ``count_top`` vs ``count_second`` (abstain if > alpha).
    """

    prediction: int
    count_top: int
    count_second: int
    p_value: float

    @property
    def abstained(self) -> bool:
        return self.prediction == ABSTAIN


class SmoothedClassifier:
    """A Gaussian-smoothed view of a base classifier, with batched PREDICT and CERTIFY.

    Args:
        model: the base classifier: (b, C, H, W) inputs -> (b, K) logits. A ``RobustModel`` gives
            ``num_classes``, the device and the output check.
        sigma: noise standard deviation in the model's input units (the scale of ``model.bounds``).
        num_classes: K (default: ``model.num_classes``).
        batch_size: noisy inputs per forward pass; several images share a pass when ``n`` is smaller.
        channels_last: run a channels-last copy of the model (faster on CPU; same function).
        fold_bn: fold the copy's eval-mode batch norms into the convolutions before them (same function
            up to rounding; checked against the model on the first images, else the model is used).
        max_group: at most this many images per group (one host sync per group).

    Randomness: every image has a seed (e.g. from ``robustlab.seeding.sample_seeds``); selection,
    estimation and prediction noise come from independent streams derived from it, so results do not
    depend on the batch size or on which other images are certified alongside.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        sigma: float,
        num_classes: int | None = None,
        batch_size: int = 1000,
        channels_last: bool = True,
        max_group: int = 64,
        fold_bn: bool = True,
    ) -> None:
        if not (sigma > 0 and math.isfinite(sigma)):
            raise RobustlabError(f"sigma must be a positive finite number, got {sigma}; pass e.g. --sigma 0.25.")
        k = num_classes if num_classes is not None else getattr(model, "num_classes", None)
        if k is None:
            raise RobustlabError("num_classes is unknown: wrap the model in a RobustModel or pass num_classes.")
        self.model = model
        self.sigma = float(sigma)
        self.num_classes = int(k)
        self.batch_size = max(1, int(batch_size))
        self.max_group = max(1, int(max_group))
        self._channels_last = channels_last
        self._fold_bn = bool(fold_bn)
        self._fast: torch.nn.Module | None = None
        self._check: Callable[[torch.Tensor, int], None] | None = getattr(model, "check_output", None)

    # -- sampling ---------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        dev = getattr(self.model, "device", None)
        if isinstance(dev, torch.device):
            return dev
        p = next(iter(self.model.parameters()), None)
        return p.device if p is not None else torch.device("cpu")

    def _classifier(self, x: torch.Tensor) -> torch.nn.Module:
        if not (self._channels_last and x.ndim == 4):
            return self.model
        if self._fast is None:
            fast = fast_classifier(self.model, channels_last=True, fold_bn=self._fold_bn)
            if fast is not self.model and not same_function(self.model, fast, x.to(self.device)):
                log.warning("the smoothing copy of the model disagrees with it beyond rounding; votes come from the model itself")
                fast = self.model
            self._fast = fast
        return self._fast

    def votes(self, x: torch.Tensor, seeds: Sequence[int], *, num: int, phase: str) -> torch.Tensor:
        """(B, K) int64 vote counts on the device for ``num`` noise samples per image.

        Args:
            x: (B, C, H, W) images in the model's bounds.
            seeds: B per-image seeds; the stream used is ``derive_seed(seed, phase)``.
            phase: names an independent noise stream (``select``, ``estimate``, ``predict``, ...).
        """
        if len(seeds) != x.shape[0]:
            raise RobustlabError(f"{len(seeds)} seeds for {x.shape[0]} images; pass one seed per image (robustlab.seeding.sample_seeds).")
        x = x.to(self.device)
        clf = self._classifier(x)
        check, self._check = self._check, None  # validate the output once
        return count_votes(
            clf,
            x,
            [derive_seed(int(s), phase) for s in seeds],
            num=num,
            sigma=self.sigma,
            num_classes=self.num_classes,
            batch_size=self.batch_size,
            channels_last=clf is not self.model,
            check_output=check,
        )

    def _groups(self, count: int, per_image: int) -> list[slice]:
        g = max(1, min(self.max_group, self.batch_size // max(1, per_image)))
        return [slice(s, min(s + g, count)) for s in range(0, count, g)]

    # -- CERTIFY ----------------------------------------------------------------------------
    def certify(self, x: torch.Tensor, seeds: Sequence[int], *, n0: int = 100, n: int = 100_000, alpha: float = 0.001) -> list[Certificate]:
        """CERTIFY each image: select the top class with ``n0`` samples, bound its probability with
        ``n`` fresh samples, and return the certified L2 radius.

        Args:
            x: (B, C, H, W) images in the model's bounds.
            seeds: B per-image seeds.
            n0: selection samples. n: estimation samples. alpha: failure probability.
        Returns:
            B :class:`Certificate`. With probability at least 1 - alpha (per image), a non-abstained
            prediction equals g(x) and g is constant on the L2 ball of the returned radius.
        References: Cohen, Rosenfeld & Kolter, "Certified Adversarial Robustness via Randomized
            Smoothing", ICML 2019, Algorithm CERTIFY; checked against ``Smooth.certify`` in
            locuslab/smoothing ``core.py`` (one-sided Clopper-Pearson bound, abstain below 0.5).
        """
        _check_budget(n0=n0, n=n, alpha=alpha)
        out: list[Certificate] = []
        for sl in self._groups(int(x.shape[0]), n0 + n):
            sel = self.votes(x[sl], seeds[sl], num=n0, phase="select")
            est = self.votes(x[sl], seeds[sl], num=n, phase="estimate")
            c_hat = sel.argmax(1)
            n_a = est.gather(1, c_hat[:, None])[:, 0]
            host = torch.stack([c_hat, n_a, est.argmax(1)], 1).cpu().numpy()  # the one sync per group
            p_low = lower_confidence_bound(host[:, 1], n, alpha)
            radius = certified_radius(p_low, self.sigma)
            for (c, k, maj), pl, r in zip(host.tolist(), p_low.tolist(), radius.tolist()):
                ok = pl >= 0.5
                out.append(Certificate(prediction=int(c) if ok else ABSTAIN, radius=float(r) if ok else 0.0, p_lower=float(pl), count=int(k), n=int(n), majority=int(maj), selected=int(c)))
        return out

    def certify_adaptive(self, x: torch.Tensor, seeds: Sequence[int], *, radii: Sequence[float], n0: int = 100, n: int = 100_000,
                         alpha: float = 0.001, labels: Sequence[int] | np.ndarray | torch.Tensor | None = None) -> list[Certificate]:
        """CERTIFY with as few estimation samples as the requested radii need (at most ``n``).

        Selection as in :meth:`certify` (``n0`` samples); then looks of growing size, each bounding pA
        with an anytime-valid confidence sequence (:mod:`.sequential`), stopping once the answer at
        every radius of ``radii`` is decided or at ``n`` samples.

        Args:
            x: (B, C, H, W) images in the model's bounds. seeds: B per-image seeds.
            radii: the radii at which certified accuracy is reported (they decide when to stop).
            n0: selection samples. n: cap on estimation samples. alpha: failure probability.
            labels: B true labels, or None. With labels, an image whose selected class is not its label
                (uncertified at every radius whatever its bound) stops as soon as its abstention is
                decided; its prediction, abstention and majority are those without labels, its radius
                and ``n`` can be smaller. Images whose selected class is their label are unaffected.
        Returns:
            B :class:`Certificate` with ``n`` = estimation samples used. With probability at least
            1 - alpha (per image), a non-abstained prediction equals g(x) and g is constant on the L2
            ball of the returned radius, whatever the stopping time.
        References: Cohen et al. 2019 (CERTIFY); Howard et al. 2021 (mixture confidence sequence);
            Voracek 2024, Horvath et al. 2022 (sequential / input-specific sampling for smoothing).
        """
        _check_budget(n0=n0, n=n, alpha=alpha)
        thresholds = radius_thresholds(radii, self.sigma)
        y = None if labels is None else np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels, dtype=np.int64).reshape(-1)
        if y is not None and y.shape[0] != int(x.shape[0]):
            raise RobustlabError(f"labels has {y.shape[0]} entries for {int(x.shape[0])} images; pass one label per image.")
        out: list[Certificate] = []
        for sl in self._groups(int(x.shape[0]), 1):  # looks start small: batch many images
            xs, ss = x[sl], list(seeds[sl])
            selected = self.votes(xs, ss, num=n0, phase="select").argmax(1).cpu().numpy()

            def votes(rows: np.ndarray, num: int, look: int, xs: torch.Tensor = xs, ss: list[int] = ss) -> np.ndarray:
                idx = rows.tolist()
                return self.votes(xs[idx], [ss[i] for i in idx], num=num, phase=f"estimate/look={look}").cpu().numpy()

            settle = None if y is None else selected != y[sl]
            counts, used, p_low = adaptive_estimate(votes, selected, cap=n, alpha=alpha, thresholds=thresholds, num_classes=self.num_classes,
                                                    settle_only=settle)
            radius = certified_radius(p_low, self.sigma)
            for i in range(len(ss)):
                c, ok = int(selected[i]), bool(p_low[i] >= 0.5)
                out.append(Certificate(prediction=c if ok else ABSTAIN, radius=float(radius[i]) if ok else 0.0, p_lower=float(p_low[i]),
                                       count=int(counts[i, c]), n=int(used[i]), majority=int(counts[i].argmax()), selected=c))
        return out

    # -- PREDICT ----------------------------------------------------------------------------
    def predict(self, x: torch.Tensor, seeds: Sequence[int], *, n: int = 100_000, alpha: float = 0.001) -> list[Prediction]:
        """PREDICT each image: the top class of ``n`` noisy votes, or abstain when a two-sided
        binomial test cannot tell it from the runner-up at level ``alpha``.

        Args:
            x: (B, C, H, W) images in the model's bounds. seeds: B per-image seeds.
        Returns:
            B :class:`Prediction`; a non-abstained answer differs from g(x) with probability <= alpha.
        References: Cohen et al. 2019, Algorithm PREDICT; checked against ``Smooth.predict`` in
            locuslab/smoothing ``core.py``.
        """
        _check_budget(n0=1, n=n, alpha=alpha)
        out: list[Prediction] = []
        for sl in self._groups(int(x.shape[0]), n):
            votes = self.votes(x[sl], seeds[sl], num=n, phase="predict")
            k2 = min(2, self.num_classes)
            top = votes.topk(k2, dim=1)
            host = torch.cat([top.indices, top.values], 1).cpu().numpy()  # one sync per group
            for row in host.tolist():
                c1, n1 = int(row[0]), int(row[k2])
                n2 = int(row[k2 + 1]) if k2 == 2 else 0
                pv = predict_pvalue(n1, n2)
                out.append(Prediction(prediction=ABSTAIN if pv > alpha else c1, count_top=n1, count_second=n2, p_value=pv))
        return out

    def majority(self, x: torch.Tensor, seeds: Sequence[int], *, n: int, phase: str = "majority") -> np.ndarray:
        """(B,) int64 Monte-Carlo estimate of g(x): the most voted class among ``n`` samples (no test,
        no abstention). Used for empirical (attack) accuracy, never for a certificate."""
        out: list[np.ndarray] = []
        for sl in self._groups(int(x.shape[0]), n):
            out.append(self.votes(x[sl], seeds[sl], num=n, phase=phase).argmax(1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _check_budget(*, n0: int, n: int, alpha: float) -> None:
    if n0 < 1 or n < 1:
        raise RobustlabError(f"n0 and n must be at least 1 (got n0={n0}, n={n}); Cohen et al. use n0=100, n=100000.")
    if not ALPHA_MIN <= alpha < 1:
        raise RobustlabError(f"alpha must be in [{ALPHA_MIN:g}, 1), got {alpha}; the standard is 0.001.")
