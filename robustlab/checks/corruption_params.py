"""Parameters of the ``corruption`` check (:mod:`robustlab.checks.corruption`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..corruptions.names import BENCHMARK, GROUPS, expand
from ..errors import SuiteError
from .base import Params

BASELINE_WORDS = ("auto", "alexnet", "none")


@dataclass(frozen=True)
class CorruptionParams(Params):
    """Parameters of the ``corruption`` check.

    Attributes:
        corruptions: registered corruption names (built-in or entry-point plugins), or the groups
            ``benchmark`` (the 15), ``held_out`` (the 4), ``all`` (the 19 built-ins); default: the 15.
        severities: severities 1..5 to evaluate.
        backend: ``fast`` (batched torch, any device) or ``reference`` (per image on the CPU:
            imagecorruptions for ``imagenet-c``, the NumPy transcription of make_cifar_c.py for
            ``cifar-c`` / ``cifar-c-small``).
        protocol: ``auto`` (cifar-c for 32x32 images, imagenet-c for sides >= 64, cifar-c-small
            otherwise), ``imagenet-c``, ``cifar-c`` or ``cifar-c-small``; see
            :mod:`robustlab.corruptions.protocol`. The resolved protocol and its source are recorded
            in the result's params (``protocol_resolved``, ``protocol_source``).
        baseline: ``auto`` (AlexNet's ImageNet-C errors for 1000-class data, else none), ``alexnet``,
            ``none``, or the path of a baseline model's scorecard.json (with a corruption check).
        precomputed: folder of a pre-rendered set (CIFAR-10-C / CIFAR-100-C .npy layout, or
            ImageNet-C's corruption/severity/class folders) to evaluate instead of corrupting on the fly.
        precomputed_limit: use only the first n images of each (corruption, severity) of that set.
        ece_bins: equal-width confidence bins of the ECE.
        per_sample: store each sample's number of correct (corruption, severity) cells.
    """

    corruptions: list[str] = field(default_factory=lambda: list(BENCHMARK))
    severities: list[int] = field(default_factory=lambda: [1, 2, 3, 4, 5])
    backend: str = "fast"
    protocol: str = "auto"
    baseline: str | None = "auto"
    precomputed: str | None = None
    precomputed_limit: int | None = None
    ece_bins: int = 15
    per_sample: bool = True

    def names(self) -> list[str]:
        """The corruption names, groups expanded, in order, without repeats."""
        return expand(self.corruptions)

    def validate(self) -> None:
        import difflib

        from ..corruptions.registry import FAST_CORRUPTIONS, corruption_names

        if not self.corruptions:
            raise SuiteError("corruption.corruptions is empty; list at least one of: " + ", ".join(corruption_names()) + ".")
        for c in self.corruptions:
            if c not in FAST_CORRUPTIONS and c not in GROUPS:
                known = corruption_names()
                close = difflib.get_close_matches(c, known, n=2, cutoff=0.5)
                hint = f" (did you mean {' or '.join(repr(x) for x in close)}?)" if close else ""
                raise SuiteError(f"corruption.corruptions: unknown corruption {c!r}{hint}; known: {', '.join(known)}, or the groups all, benchmark, held_out.")
        if self.backend == "reference" and any(n not in GROUPS["all"] for n in self.names()):
            raise SuiteError("corruption.backend: reference covers the 19 built-in corruptions only; use backend: fast for plugin corruptions.")
        if len(set(self.corruptions)) != len(self.corruptions) or len(self.names()) != sum(len(GROUPS.get(c, (c,))) for c in self.corruptions):
            raise SuiteError("corruption.corruptions lists a corruption twice; list each once.")
        if not self.severities or any(s not in (1, 2, 3, 4, 5) for s in self.severities) or len(set(self.severities)) != len(self.severities):
            raise SuiteError(f"corruption.severities must be distinct integers in 1..5, got {self.severities}.")
        if self.backend not in ("fast", "reference"):
            raise SuiteError(f"corruption.backend must be 'fast' or 'reference', got {self.backend!r}.")
        if self.protocol not in ("auto", "imagenet-c", "cifar-c", "cifar-c-small"):
            raise SuiteError(f"corruption.protocol must be one of auto, imagenet-c, cifar-c, cifar-c-small, got {self.protocol!r}.")
        if self.baseline is not None and self.baseline not in BASELINE_WORDS and not Path(self.baseline).expanduser().is_file():
            raise SuiteError(f"corruption.baseline {self.baseline!r} is neither one of {', '.join(BASELINE_WORDS)} nor an existing scorecard.json; pass the baseline model's scorecard path.")
        if self.precomputed is not None and not Path(self.precomputed).expanduser().is_dir():
            raise SuiteError(f"corruption.precomputed folder {self.precomputed!r} does not exist; pass the extracted CIFAR-10-C / CIFAR-100-C / ImageNet-C folder.")
        if self.precomputed_limit is not None and self.precomputed_limit <= 0:
            raise SuiteError(f"corruption.precomputed_limit must be positive, got {self.precomputed_limit}.")
        if not 2 <= self.ece_bins <= 1000:
            raise SuiteError(f"corruption.ece_bins must be between 2 and 1000, got {self.ece_bins}.")
