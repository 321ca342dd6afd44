"""Attacks on integer models: BPDA through the fake-quantized surrogate, every candidate re-verified
on the real int8 model, transfer and Square, worst case per sample, and the masking audit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from robustlab.compress import CompressionSpec
from robustlab.compress.attacks import integer_robustness
from robustlab.compress.quantize import GradientMode
from robustlab.data import load_dataset
from robustlab.models import LoadOptions, load_model
from robustlab.pipelines.compress import CompressConfig, compress
from robustlab.pipelines.variant_checks import integer_attack_result
from robustlab.scorecard import Verdict

N = 16


@pytest.fixture(scope="module")
def setting(tmp_path_factory: pytest.TempPathFactory):
    path = compress(CompressConfig("zoo:digits-cnn", LoadOptions(), CompressionSpec.parse("int8-static"), tmp_path_factory.mktemp("q") / "int8.safetensors", calibration_n=256)).path
    d = load_dataset("digits", split="test")
    return load_model(str(path)), load_model("zoo:digits-cnn"), d.images(slice(0, N)), d.y[:N]


def _run(setting, mode: GradientMode):
    variant, base, x, y = setting
    return integer_robustness(variant, base, x, y, 0.1, seeds=list(range(N)), steps=5, square_queries=50, batch_size=16, whitebox_gradient=mode)


def test_masking_by_quantization_is_detected_and_the_worst_case_corrects_it(setting) -> None:
    naive = _run(setting, GradientMode.EXACT)
    res = integer_attack_result(naive, params={}, seconds=0.0)
    item = next(a for a in res.audit if a.name == "gradient_masking_by_quantization")
    assert item.verdict is Verdict.INVALID, item.message
    # the naive white-box attack cannot move (zero gradient): it reports the clean accuracy
    assert naive.accuracy("whitebox") == pytest.approx(float(naive.clean.float().mean()))
    assert naive.accuracy("worst") < naive.accuracy("whitebox")
    assert naive.accuracy("worst") <= min(naive.accuracy("transfer"), naive.accuracy("square"))


def test_bpda_sees_through_the_quantization(setting) -> None:
    bpda = _run(setting, GradientMode.BPDA)
    res = integer_attack_result(bpda, params={}, seconds=0.0)
    item = next(a for a in res.audit if a.name == "gradient_masking_by_quantization")
    assert item.verdict is Verdict.VALID, item.message
    assert bpda.accuracy("whitebox") < bpda.accuracy("exact")
    assert res.metrics["adversarial/integer_attack/eps_0.1/worst/robust_accuracy"] == pytest.approx(bpda.accuracy("worst"))
    assert res.per_sample["robust/eps_0.1"] == bpda.worst.tolist()


def test_every_flag_is_the_integer_models_verdict(setting, monkeypatch: pytest.MonkeyPatch) -> None:
    """Candidates are re-verified on the int8 model: if the integer model's forward pass is replaced
    by one that always answers the label, every way reports full robustness, whatever the surrogate says."""
    variant, base, x, y = setting
    qn = variant.net
    truth = {"y": None}

    class Oracle(torch.nn.Module):
        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.one_hot(truth["y"][: z.shape[0]], 10).float() * 100.0

    monkeypatch.setattr(qn, "integer", Oracle())
    truth["y"] = y[:12]
    ir = integer_robustness(variant, base, x[:12], y[:12], 0.1, seeds=list(range(12)), steps=3, square_queries=20, batch_size=12)
    assert all(ir.accuracy(w) == 1.0 for w in ("whitebox", "exact", "transfer", "square", "worst"))
