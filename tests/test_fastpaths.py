"""GPU fast paths: what "fp32" means.

PyTorch leaves ``torch.backends.cudnn.allow_tf32`` True out of the box, so on an Ampere or later GPU
every convolution of an "fp32" evaluation ran in TF32. The flags are process-wide and set whether or
not a GPU is present, so this is testable on a CPU.
"""

from __future__ import annotations

import pytest
import torch

from robustlab.fastpaths import AutocastView, apply_fast_paths, tf32_state
from robustlab.models import load_model


@pytest.fixture
def pytorch_defaults():
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True  # PyTorch's own defaults
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@pytest.mark.parametrize("precision, tf32", [("fp32", False), ("bf16", False), ("tf32", True)])
def test_precision_sets_both_tf32_flags(pytorch_defaults, precision, tf32) -> None:
    model = load_model("zoo:digits-cnn", device="cpu")
    view = apply_fast_paths(model, precision=precision)
    assert tf32_state() == {"cuda_matmul_allow_tf32": tf32, "cudnn_allow_tf32": tf32}
    assert isinstance(view, AutocastView) == (precision == "bf16")


def test_fp32_after_tf32_in_the_same_process_is_fp32_again(pytorch_defaults) -> None:
    model = load_model("zoo:digits-cnn", device="cpu")
    apply_fast_paths(model, precision="tf32")
    apply_fast_paths(model, precision="fp32")
    assert not any(tf32_state().values())


@pytest.mark.parametrize("features, native", [({"avx512_f": True, "avx512_bw": True, "avx512_bf16": False, "amx_bf16": False}, False),
                                              ({"avx512_f": True, "avx512_bf16": True}, True), ({"amx_bf16": True}, True), ({}, False)])
def test_native_bf16_is_read_from_the_cpu_features_not_from_onednn_s_emulation(monkeypatch, features, native) -> None:
    # oneDNN's own query says yes on any AVX-512 CPU, where it emulates bf16 and autocast is slower than fp32
    import robustlab.fastpaths as fp

    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: features)
    assert fp.cpu_native_bf16() is (native and torch.backends.mkldnn.is_available())


@pytest.mark.parametrize("native, says", [(True, "native bf16 instructions"), (False, "emulated")])
def test_bf16_on_a_cpu_logs_what_it_will_cost_there(pytorch_defaults, monkeypatch, caplog, native, says) -> None:
    import logging

    import robustlab.fastpaths as fp

    monkeypatch.setattr(fp, "cpu_native_bf16", lambda: native)
    model = load_model("zoo:digits-cnn", device="cpu")
    with caplog.at_level(logging.INFO, logger="robustlab.fastpaths"):
        assert isinstance(apply_fast_paths(model, precision="bf16"), AutocastView)
    assert says in caplog.text and ("slower than fp32" in caplog.text) is not native


def test_a_cpu_scorecard_records_the_kernels_and_bf16_support() -> None:
    from robustlab.fastpaths import cpu_native_bf16
    from robustlab.runner import environment

    env = environment(torch.device("cpu"))
    assert env["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert env["cpu_native_bf16"] is cpu_native_bf16()
