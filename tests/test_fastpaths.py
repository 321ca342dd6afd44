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
