"""The threat model's vocabulary, torch-free: norms, attack losses and the standard budgets.

This is the one home of the adversarial budgets: the checks (default epsilons), the defenses
(training budget) and the report's "not tested" list (``robustlab.report.untested``) all read
:data:`BUDGETS`. A budget marked ``standard`` is the field's (``REFERENCES.md``: RobustBench /
AutoAttack); the others are robustlab's documented choices, used as defaults but never cited as
"the standard budget".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ..errors import SuiteError

__all__ = ["Norm", "Loss", "Budget", "BUDGETS", "dataset_key", "budget_for", "standard_budgets"]


class Norm(str, enum.Enum):
    """The threat model's norm."""

    LINF = "linf"
    L2 = "l2"

    @classmethod
    def parse(cls, value: "Norm | str") -> "Norm":
        if isinstance(value, Norm):
            return value
        v = str(value).strip().lower().replace("_", "")
        aliases = {"linf": cls.LINF, "inf": cls.LINF, "l2": cls.L2, "2": cls.L2}
        if v not in aliases:
            raise SuiteError(f"unknown norm {value!r}; use 'linf' or 'l2'.")
        return aliases[v]

    @property
    def autoattack_name(self) -> str:
        return "Linf" if self is Norm.LINF else "L2"


class Loss(str, enum.Enum):
    """Attack objectives: cross-entropy, the difference-of-logits ratio (Croce & Hein 2020, eq. 5),
    its targeted form (eq. 6, needs the true label and a target) and the logit margin (Carlini &
    Wagner 2017)."""

    CE = "ce"
    DLR = "dlr"
    DLR_TARGETED = "dlr-targeted"
    MARGIN = "margin"

    @classmethod
    def parse(cls, value: "Loss | str") -> "Loss":
        if isinstance(value, Loss):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError as exc:
            raise SuiteError(f"unknown attack loss {value!r}; use one of {', '.join(m.value for m in cls)}.") from exc


@dataclass(frozen=True)
class Budget:
    """A budget in [0, 1] input scale. ``standard``: the field's (REFERENCES.md), else robustlab's choice."""

    eps: float
    label: str
    standard: bool


#: Budgets by data-set key and norm (inputs in [0, 1]; other bounds scale them).
BUDGETS: dict[str, dict[Norm, Budget]] = {
    "cifar10": {Norm.LINF: Budget(8 / 255, "8/255", True), Norm.L2: Budget(0.5, "0.5", True)},
    "cifar100": {Norm.LINF: Budget(8 / 255, "8/255", True), Norm.L2: Budget(0.5, "0.5", False)},
    "imagenet": {Norm.LINF: Budget(4 / 255, "4/255", True), Norm.L2: Budget(3.0, "3.0", False)},
    "mnist": {Norm.LINF: Budget(0.3, "0.3", True), Norm.L2: Budget(2.0, "2.0", False)},
    # sklearn digits (8x8, values 0..1): at Linf 0.1 / L2 0.5 the zoo digits CNN keeps roughly
    # 20-35% robust accuracy: neither trivially robust nor trivially broken.
    "digits": {Norm.LINF: Budget(0.1, "0.1", False), Norm.L2: Budget(0.5, "0.5", False)},
}


def dataset_key(name: str) -> str | None:
    """The :data:`BUDGETS` key a data-set name or spec refers to (``cifar100`` before ``cifar10``;
    Fashion-MNIST is not MNIST), or None."""
    s = str(name).lower().replace("-", "").replace("_", "")
    if "cifar100" in s:
        return "cifar100"
    if "cifar" in s:
        return "cifar10"
    for k in ("imagenet", "digits"):
        if k in s:
            return k
    if "mnist" in s and "fashion" not in s:
        return "mnist"
    return None


def budget_for(key: str, norm: Norm) -> Budget | None:
    return BUDGETS.get(key, {}).get(norm)


def standard_budgets(key: str) -> dict[Norm, Budget]:
    """The field's standard budgets of a data set (robustlab's own choices left out)."""
    return {n: b for n, b in BUDGETS.get(key, {}).items() if b.standard}
