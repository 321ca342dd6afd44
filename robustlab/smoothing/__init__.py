"""Certified L2 robustness by randomized smoothing (Cohen, Rosenfeld & Kolter 2019).

- :class:`SmoothedClassifier`: batched PREDICT and CERTIFY, noise sampled and counted on the device.
- :mod:`.sequential`: anytime-valid confidence sequence and adaptive CERTIFY (stops when decided).
- :mod:`.bounds`: Clopper-Pearson lower bound, certified radius, PREDICT's binomial test.
- :mod:`.curves`: certified accuracy, average certified radius, standard sigmas.
- :func:`smoothadv_pgd_l2`: L2 attack on the smoothed classifier (upper end of the robustness interval).
"""

from .bounds import certified_radius, lower_confidence_bound, max_certifiable_radius, predict_pvalue
from .curves import STANDARD_SIGMAS, average_certified_radius, certified_accuracy, standard_sigmas
from .smoothadv import smoothadv_pgd_l2
from .sequential import SamplingMode, confidence_sequence
from .classifier import ABSTAIN, Certificate, Prediction, SmoothedClassifier

__all__ = [
    "ABSTAIN",
    "STANDARD_SIGMAS",
    "Certificate",
    "Prediction",
    "SamplingMode",
    "SmoothedClassifier",
    "average_certified_radius",
    "certified_accuracy",
    "certified_radius",
    "confidence_sequence",
    "lower_confidence_bound",
    "max_certifiable_radius",
    "predict_pvalue",
    "smoothadv_pgd_l2",
    "standard_sigmas",
]
