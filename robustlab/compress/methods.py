"""Compression methods (``robustlab compress --method M``): parsed once, at the boundary.

``fp16``, ``bf16`` (weights and activations in half precision), ``int8-dynamic`` (int8 weights of
the linear layers, activations quantized per batch at run time), ``int8-static`` (int8 weights and
activations, calibrated), ``qat`` (int8-static after quantization-aware fine-tuning),
``prune-unstructured:<s>`` (global L1 magnitude pruning of a fraction ``s`` of the conv/linear
weights) and ``prune-structured:<s>`` (L2 channel pruning of a fraction ``s`` of every conv layer's
output channels).
"""

from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass

from ..errors import RobustlabError, path_problem, printable


class CompressionError(RobustlabError):
    """A compression request that cannot be carried out (bad method, bad sparsity, test data for calibration)."""


class Method(str, enum.Enum):
    FP16 = "fp16"
    BF16 = "bf16"
    INT8_DYNAMIC = "int8-dynamic"
    INT8_STATIC = "int8-static"
    QAT = "qat"
    PRUNE_UNSTRUCTURED = "prune-unstructured"
    PRUNE_STRUCTURED = "prune-structured"

    @property
    def quantized(self) -> bool:
        """Runs integer kernels (no useful gradient): attacked through a surrogate."""
        return self in (Method.INT8_DYNAMIC, Method.INT8_STATIC, Method.QAT)

    @property
    def pruned(self) -> bool:
        return self in (Method.PRUNE_UNSTRUCTURED, Method.PRUNE_STRUCTURED)


@dataclass(frozen=True)
class CompressionSpec:
    """One compression request: ``method`` and, for pruning, the target ``sparsity`` in (0, 1)."""

    method: Method
    sparsity: float | None = None

    @property
    def name(self) -> str:
        """The spec as written on the command line (``prune-unstructured:0.5``)."""
        return self.method.value if self.sparsity is None else f"{self.method.value}:{self.sparsity:g}"

    @classmethod
    def parse(cls, text: str) -> "CompressionSpec":
        raw = text.strip().lower()
        head, sep, arg = raw.partition(":")
        known = ", ".join(m.value + (":<sparsity>" if m.pruned else "") for m in Method)
        try:
            method = Method(head)
        except ValueError:
            if looks_like_path(text):  # a variant file that is not there (evaluate --variants), not a misspelt method
                where = "is a file, not a compression method" if os.path.isfile(os.path.expanduser(text)) else path_problem(os.path.expanduser(text))
                raise CompressionError(f"file {printable(text)} {where} (compression methods: {known}).") from None
            raise CompressionError(f"unknown compression method {text!r}; use one of {known}.") from None
        if method.pruned:
            if not sep:
                raise CompressionError(f"{method.value} needs a sparsity, e.g. {method.value}:0.5 (the fraction of weights removed).")
            try:
                if not _DECIMAL.fullmatch(arg):  # float() also reads 0_5 (as 5), ' 0.5', 'nan', 'inf'
                    raise ValueError(arg)
                s = float(arg)
            except ValueError:
                raise CompressionError(f"sparsity in {text!r} must be a number in (0, 1), e.g. {method.value}:0.5.") from None
            if not 0.0 < s < 1.0:
                raise CompressionError(f"sparsity in {text!r} must be in (0, 1) (exclusive), got {s:g}.")
            return cls(method, s)
        if sep:
            raise CompressionError(f"{method.value} takes no argument (got {text!r}); use one of {known}.")
        return cls(method)


_SUFFIX = re.compile(r"\.[A-Za-z][A-Za-z0-9]*")
_DECIMAL = re.compile(r"(\d+\.?\d*|\.\d+)(e[+-]?\d+)?")


def looks_like_path(text: str) -> bool:
    """Whether ``text`` names a file rather than a method: it has a path separator, starts with ``~``
    or ends in a file suffix (``x.safetensors``; not ``prune-unstructured:0.5``, whose "suffix" is a number)."""
    t = text.strip()
    if not t or "/" in t or os.sep in t or (os.altsep is not None and os.altsep in t) or t.startswith("~"):
        return bool(t)
    return bool(_SUFFIX.fullmatch(os.path.splitext(t)[1]))
