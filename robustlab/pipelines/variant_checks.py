"""The scorecard side of compressed variants: the ``integer_attack`` check result (valid attacks on
an integer model, with its masking audit) and the measurements of a variant (size, sparsity, latency)."""

from __future__ import annotations

import io
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..compress.attacks import IntegerRobustness
from ..compress.prune import sparsity
from ..compress.pt2e import integer_bytes, integer_ops
from ..compress.quantize import QuantizedNet
from ..metric_keys import EPS_ANY, eps_segment, key, pattern, per_eps
from ..scorecard import AuditItem, CheckResult, Verdict
from ..stats import wilson_interval

CHECK_ID = "integer_attack"
#: ways whose robust accuracy a valid white-box result may not exceed
REFERENCE_WAYS = ("transfer", "square")

def definitions(check_id: str = CHECK_ID) -> dict[str, str]:
    """Metric definitions of an ``integer_attack`` result whose suite id is ``check_id``."""
    return {
        pattern("adversarial", check_id, EPS_ANY, "whitebox", "robust_accuracy"): "Robust accuracy under PGD Linf through the fake-quantized surrogate (BPDA: straight-through rounding); every candidate scored on the real integer model.",
        pattern("adversarial", check_id, EPS_ANY, "exact", "robust_accuracy"): "Robust accuracy under PGD Linf with the integer model's exact gradient (zero almost everywhere): what a tool that differentiates the quantized model as written reports. Diagnostic only.",
        pattern("adversarial", check_id, EPS_ANY, "transfer", "robust_accuracy"): "Robust accuracy of the variant on the full-precision base model's PGD Linf examples.",
        pattern("adversarial", check_id, EPS_ANY, "square", "robust_accuracy"): "Robust accuracy under the black-box Square attack (Linf) on the integer model.",
        pattern("adversarial", check_id, EPS_ANY, "worst", "robust_accuracy"): "Fraction of samples classified correctly clean and under every way of attacking (whitebox, exact, transfer, square, and the suite's own attacks at the same budget, suite_<check>): the worst case per sample. The headline robust accuracy of a quantized variant.",
        pattern("adversarial", check_id, EPS_ANY, "suite_*", "robust_accuracy"): "Robust accuracy of the suite's own check <check> on this variant at the same budget (its per-sample flags, scored on the integer model), folded into the worst case.",
    }


DEFINITIONS = definitions()


def integer_attack_result(ir: IntegerRobustness, *, params: dict[str, Any], seconds: float, check_id: str = CHECK_ID) -> CheckResult:
    """The ``integer_attack`` check (suite id ``check_id``) of a quantized variant, with the audit item
    ``gradient_masking_by_quantization``: white-box robust accuracy above the transfer or black-box one."""
    res = CheckResult(check_id, CHECK_ID, params={**params, "eps": ir.eps}, definitions=definitions(check_id), seconds=seconds)
    n = int(ir.clean.numel())
    eps = eps_segment(ir.eps)
    for way in (*ir.robust, "worst"):
        flags = ir.worst if way == "worst" else ir.robust[way]
        k = int(flags.sum())
        res.add_metric(key("adversarial", check_id, eps, way, "robust_accuracy"), k / n if n else float("nan"), interval=wilson_interval(k, n) if n else None, n=n)
        res.per_sample[per_eps(f"robust_{way}", ir.eps)] = [bool(v) for v in flags.tolist()]
    res.per_sample[per_eps("robust", ir.eps)] = [bool(v) for v in ir.worst.tolist()]
    wb = ir.accuracy("whitebox")
    ref_way = min(REFERENCE_WAYS, key=ir.accuracy)
    ref = ir.accuracy(ref_way)
    missed = int((ir.robust["whitebox"] & ~ir.robust[ref_way]).sum())
    evidence = {"whitebox": wb, ref_way: ref, "missed_by_whitebox": missed, "exact_gradient": ir.accuracy("exact")}
    if wb > ref:
        res.audit.append(AuditItem("gradient_masking_by_quantization", Verdict.INVALID,
                                   f"white-box robust accuracy {wb:.4f} exceeds {ref_way} {ref:.4f} ({missed} point(s) the white-box attack missed): "
                                   "gradients do not see through the quantization; report the worst case", evidence))
    else:
        res.audit.append(AuditItem("gradient_masking_by_quantization", Verdict.VALID, f"white-box robust accuracy {wb:.4f} <= {ref_way} {ref:.4f}", evidence))
    exact = ir.accuracy("exact")
    if exact > ref:
        res.notes.append(f"the exact-gradient white-box attack overstates robustness: {exact:.4f} vs {ref_way} {ref:.4f} (worst case {ir.accuracy('worst'):.4f})")
    return res


def deployed_bytes(net: nn.Module) -> int:
    """Bytes of the network as it runs (``torch.save`` of its state dict; for int8 variants the integer
    model's, for a lowered PT2E graph the bytes of the constants it reads)."""
    target = net.integer if isinstance(net, QuantizedNet) else net
    if integer_ops(target):  # a lowered PT2E graph: its constants (packed int8 weights) are not in its state dict
        return integer_bytes(target)
    buf = io.BytesIO()
    torch.save(target.state_dict(), buf)
    return buf.tell()


def weight_sparsity(net: nn.Module) -> float | None:
    """Fraction of zero conv/linear weights (None for an integer model, whose weights are packed)."""
    return None if isinstance(net, QuantizedNet) else sparsity(net)


def latency_ms(model: nn.Module, x: torch.Tensor, *, repeats: int = 5) -> float:
    """Median CPU wall time per image in milliseconds of a forward pass on the batch ``x`` (one warm-up)."""
    with torch.no_grad():
        model(x)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t)
    return 1000.0 * statistics.median(times) / max(1, int(x.shape[0]))


def measurements(model: nn.Module, path: str | None, x: torch.Tensor) -> dict[str, Any]:
    net = getattr(model, "net", model)
    p = Path(path) if path else None
    return {"file_bytes": p.stat().st_size if p is not None and p.is_file() else None, "deployed_bytes": deployed_bytes(net),
            "weight_sparsity": weight_sparsity(net), "cpu_latency_ms_per_image": latency_ms(model, x), "latency_batch": int(x.shape[0]),
            "threads": torch.get_num_threads()}


__all__ = ["CHECK_ID", "definitions", "deployed_bytes", "integer_attack_result", "latency_ms", "measurements", "weight_sparsity"]
