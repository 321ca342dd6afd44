"""Compressed variants of a model (fp16/bf16, int8 dynamic/static, pruning) and their evaluation.

Algorithms only (no scorecard): :mod:`.methods` (what can be asked for), :mod:`.quantize`
(PyTorch's quantization stack, the BPDA :class:`~.quantize.QuantizedNet`), :mod:`.prune`
(``torch.nn.utils.prune``), :mod:`.variant` (the file format that loads without ``--trust-code``).
"""

from .methods import CompressionError, CompressionSpec, Method

__all__ = ["CompressionError", "CompressionSpec", "Method"]
