"""The defense contract: a training method turns a batch into a loss; the shared loop does the rest.

A :class:`DefenseMethod` implements one hook, :meth:`DefenseMethod.loss`, that maps a clean
training batch (inputs in the model's bounds, labels, one seed per sample) to a scalar loss; the
training loop (:mod:`robustlab.defenses.trainer`) owns shuffling, the optimiser, the learning-rate
schedule, validation, checkpoints and resume. Methods never copy an attack: adversarial methods
call robustlab's attack engine (:mod:`robustlab.attacks`) through :func:`attack_all_points`.
"""

from __future__ import annotations

import enum
import math
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Sequence, cast

import torch
from torch import nn

from ..errors import SuiteError
from ..registry import Registry

#: Defense methods by name: one module per method in this package, registered with
#: ``@DEFENSES.register("name")``; third parties use the entry-point group ``robustlab.defenses``.
#: A method's ``Params`` dataclass is its whole interface: suite/CLI validation and the
#: ``robustlab defend`` options are generated from its fields (:mod:`robustlab.registry`).
DEFENSES: "Registry[type[DefenseMethod]]" = Registry("defense", group="robustlab.defenses", package="robustlab.defenses")


class ValMetric(str, enum.Enum):
    """What the per-epoch validation measures besides clean accuracy."""

    PGD = "pgd"  # robust accuracy under Linf/L2 PGD at the training budget
    NOISE = "noise"  # accuracy of the base classifier under Gaussian noise at the training sigma
    CORRUPTION = "corruption"  # mean accuracy over a few benchmark corruptions at severity 3


@dataclass(frozen=True)
class DefenseParams:
    """Hyperparameters of a method (subclasses add fields; all keyword, all with defaults).

    ``None`` budgets are resolved from the model's data set by :meth:`DefenseMethod.resolve`.
    Each field becomes a ``robustlab defend`` option: ``--<field-name>`` (``_`` -> ``-``), or the
    name in ``field(metadata={"cli": ...})``; ``metadata={"help": ...}`` is its help text. ``int``,
    ``float`` (fractions like ``8/255`` allowed) and ``str`` fields take a value; a ``bool`` field
    defaulting to True gives ``--no-<name>``, one defaulting to False gives ``--<name>``.
    """

    def validate(self) -> None:
        """Raise :class:`SuiteError` for impossible values (runs before any model is loaded)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def positive(name: str, value: float | int | None, *, allow_none: bool = True) -> None:
    """Raise SuiteError unless ``value`` is a finite positive number (or None when allowed)."""
    if value is None and allow_none:
        return
    if value is None or not math.isfinite(float(value)) or float(value) <= 0:
        raise SuiteError(f"{name} must be a positive number, got {value!r}.")


@dataclass(frozen=True)
class LossOutput:
    """A method's training loss on one batch and the logits used for training accuracy.

    Attributes:
        loss: scalar tensor to minimise (with grad).
        logits: (N, K) logits of the inputs the model was trained on (clean, adversarial or noisy),
            detached; used for the running training accuracy.
        extra: plain floats for the progress line (e.g. the CE and KL parts of TRADES).
    """

    loss: torch.Tensor
    logits: torch.Tensor
    extra: dict[str, float]


class DefenseMethod(ABC):
    """Base class of training methods (template method: the loop is shared, ``loss`` is the hook).

    Subclasses set ``name``, ``description``, ``Params`` and ``val_metric`` and implement
    :meth:`loss`. ``resolve(model)`` returns a copy of the params with data-set defaults filled in.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    references: ClassVar[str] = ""
    Params: ClassVar[type[DefenseParams]] = DefenseParams
    val_metric: ClassVar[ValMetric] = ValMetric.PGD
    #: learning-rate schedule ``robustlab defend`` uses unless ``--schedule`` says otherwise.
    default_schedule: ClassVar[str] = "cosine"

    def __init__(self, params: DefenseParams | None = None) -> None:
        self.params = params if params is not None else self.Params()
        self.params.validate()

    def resolve(self, model: nn.Module) -> "DefenseMethod":
        """A copy with budgets resolved for ``model`` (default: unchanged)."""
        return self

    @abstractmethod
    def loss(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, seeds: Sequence[int], bounds: tuple[float, float]) -> LossOutput:
        """Training loss on one batch.

        Args:
            model: the model being trained (a ``RobustModel``, in training mode; inputs in ``bounds``).
            x: (N, C, H, W) clean inputs in ``bounds``. y: (N,) int64 labels.
            seeds: one seed per sample (derived from the run seed, epoch and sample id), so the
                randomness of a sample does not depend on the batch it lands in.
            bounds: the model's input range.
        """

    def val_budget(self) -> float | None:
        """The budget the per-epoch validation uses (eps for PGD, sigma for noise)."""
        return getattr(self.params, "eps", None) if self.val_metric is ValMetric.PGD else getattr(self.params, "sigma", None)

    def val_norm(self) -> str:
        return str(getattr(self.params, "norm", "linf"))


def attack_all_points(attack: Any, model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, seeds: Sequence[int], bounds: tuple[float, float]) -> torch.Tensor:
    """Run a robustlab attack (``robustlab.attacks``) on *every* point of a training batch.

    ``Attack.perturb`` returns clean errors unchanged by default (right for evaluation: a clean
    error is already non-robust), but adversarial training perturbs misclassified points too
    (Madry et al. 2018), otherwise a model trained from scratch would see almost no adversarial
    examples early on: hence ``include_clean_errors=True`` and no early stopping.

    Shapes: x (N, C, H, W) in bounds, y (N,) -> x_adv (N, C, H, W), detached.
    """
    return cast("torch.Tensor", attack.perturb(model, x.detach(), y, float(eps), seeds=list(seeds), early_stop=False, bounds=bounds, include_clean_errors=True).detach())


class eval_mode:
    """Context manager: put a module in eval mode and restore its previous mode afterwards.

    Adversarial examples are generated with batch-norm statistics frozen (as the TRADES reference
    code does), so attack iterations do not pollute the running statistics.

    Every submodule gets its own previous flag back: a wrapper in eval mode around a network in
    training mode (``RobustModel`` around the ``net`` the trainer trains) must not leave the
    network in eval mode, or the training step after the attack runs with frozen batch-norm
    statistics (which made fine-tuning diverge to a NaN loss).
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.was_training = {m: m.training for m in module.modules()}

    def __enter__(self) -> nn.Module:
        self.module.eval()
        return self.module

    def __exit__(self, *exc: object) -> None:
        for m, flag in self.was_training.items():
            m.training = flag
