"""robustlab compress: every variant kind loads back without --trust-code, records its recipe,
runs real int8 kernels where it says so, and refuses test images as calibration data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from robustlab.compress import CompressionError, CompressionSpec, Method
from robustlab.compress.pt2e import integer_ops
from robustlab.compress.quantize import GradientMode, QuantizedNet
from robustlab.data import load_dataset
from robustlab.errors import ModelLoadError
from robustlab.models import LoadOptions, load_model
from robustlab.pipelines.compress import CompressConfig, compress

METHODS = ["fp16", "bf16", "int8-dynamic", "int8-static", "prune-unstructured:0.5", "prune-structured:0.3"]


@pytest.fixture(scope="module")
def digits_test() -> tuple[torch.Tensor, torch.Tensor]:
    d = load_dataset("digits", split="test")
    return d.images(slice(0, 120)), d.y[:120]


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("variants")
    return {m: compress(CompressConfig("zoo:digits-cnn", LoadOptions(), CompressionSpec.parse(m), d / f"{m.replace(':', '_')}.safetensors", calibration_n=256)).path for m in METHODS}


#: integer kernels of the maintained stack: oneDNN int8 conv/linear (PT2E, lowered) and torch._int_mm (torchao dynamic)
INT_KERNELS = ("onednn::qconv_pointwise", "onednn::qconv2d_pointwise", "onednn::qlinear_pointwise", "aten::_int_mm")


def _integer_kernels(net: torch.nn.Module, x: torch.Tensor) -> list[str]:
    """The integer kernels that a forward pass of ``net`` on ``x`` really calls (profiled)."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        net(x)
    return [e.name for e in prof.events() if e.name in INT_KERNELS]


@pytest.mark.parametrize("method", METHODS)
def test_every_variant_loads_without_trust_code_and_records_its_recipe(method: str, variants: dict[str, Path], digits_test) -> None:
    x, y = digits_test
    base = load_model("zoo:digits-cnn")
    v = load_model(str(variants[method]), LoadOptions(trust_code=False))
    assert not v.info.trusted and v.info.format == "safetensors"
    rec = v.info.extra["compression"]
    spec = CompressionSpec.parse(method)
    assert rec["method"] == spec.method.value and rec["sparsity"] == spec.sparsity
    assert rec["base_sha256"] == base.info.sha256
    with torch.no_grad():
        agree = float((v(x).argmax(1) == base(x).argmax(1)).float().mean())
    assert agree >= 0.9, f"{method} agrees with the base on only {agree:.2f} of the images"
    if spec.method is Method.INT8_STATIC:
        assert rec["calibration"]["split"] == "train" and len(rec["calibration"]["sha256"]) == 64 and rec["calibration"]["n"] == 256
    if spec.method.quantized:
        assert isinstance(v.net, QuantizedNet)
        assert _integer_kernels(v.net.integer, x[:4]), "the integer model runs no int8 kernel"
        assert rec["stack"] == ("torchao" if spec.method is Method.INT8_DYNAMIC else "pt2e")
    if spec.method is Method.PRUNE_UNSTRUCTURED:
        w = torch.cat([p.flatten() for n, p in v.net.named_parameters() if n.endswith("weight")])
        assert abs(float((w == 0).float().mean()) - 0.5) < 0.01
    if spec.method is Method.PRUNE_STRUCTURED:
        for conv in (v.net.conv1, v.net.conv2):
            dead = (conv.weight.flatten(1) == 0).all(dim=1)
            assert int(dead.sum()) == round(0.3 * conv.out_channels)
            assert (conv.bias[dead] == 0).all()


def test_static_int8_really_runs_integer_kernels(variants: dict[str, Path], digits_test) -> None:
    """The int8-static variant is PT2E lowered to oneDNN: both convolutions and both linear layers are
    int8 kernels in its graph and are what a forward pass of the loaded variant calls."""
    x, _ = digits_test
    v = load_model(str(variants["int8-static"]))
    ops = integer_ops(v.net.integer)
    assert sorted(o.split(".")[1] for o in ops) == ["qconv_pointwise", "qconv_pointwise", "qlinear_pointwise", "qlinear_pointwise"], ops
    called = _integer_kernels(v, x[:8])
    assert called.count("onednn::qconv_pointwise") == 2 and called.count("onednn::qlinear_pointwise") == 2, called


def test_dynamic_int8_runs_int_mm_on_int8_weights(variants: dict[str, Path], digits_test) -> None:
    x, _ = digits_test
    v = load_model(str(variants["int8-dynamic"]))
    assert _integer_kernels(v, x[:8]).count("aten::_int_mm") == 2  # fc1 and fc2
    assert type(v.net.integer.fc1.weight).__module__.startswith("torchao")


def test_int8_variants_use_no_deprecated_fx_quantization(tmp_path: Path, digits_test, monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither compressing nor loading an int8 variant touches torch.ao.quantization's FX graph mode or
    quantize_dynamic (deprecated upstream); the variants still load and run integer kernels."""
    import torch.ao.quantization as tq
    import torch.ao.quantization.quantize_fx as qfx

    def banned(*_a, **_k):
        raise AssertionError("deprecated torch.ao.quantization entry point used")

    for mod, name in [(qfx, "prepare_qat_fx"), (qfx, "prepare_fx"), (qfx, "convert_fx"), (tq, "quantize_dynamic"), (tq, "get_default_qat_qconfig_mapping")]:
        monkeypatch.setattr(mod, name, banned)
    x, _ = digits_test
    for m in ("int8-static", "int8-dynamic"):
        res = compress(CompressConfig("zoo:digits-cnn", LoadOptions(), CompressionSpec.parse(m), tmp_path / f"{m}.safetensors", calibration_n=64))
        v = load_model(str(res.path))
        assert _integer_kernels(v, x[:4]), m


def test_without_torchao_int8_is_a_one_line_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from robustlab.cli import main

    monkeypatch.setitem(sys.modules, "torchao", None)  # import torchao raises ImportError
    for m in ("int8-static", "int8-dynamic"):
        r = CliRunner().invoke(main, ["compress", "--model", "zoo:digits-cnn", "--method", m, "--out", str(tmp_path / "v.safetensors")])
        assert r.exit_code == 2, r.output
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and "robustlab[quant]" in lines[0], r.output
    assert not (tmp_path / "v.safetensors").exists()


def test_integer_model_gives_every_forward_value_and_surrogate_the_gradient(variants: dict[str, Path], digits_test) -> None:
    """BPDA: with gradients on, the logits are still exactly the integer model's (so every attack
    candidate is scored on the integer model) and the gradient is the fake-quantized surrogate's."""
    x, y = digits_test
    v = load_model(str(variants["int8-static"]))
    qn = v.net
    xg = x[:16].clone().requires_grad_(True)
    out = v(xg)
    with torch.no_grad():
        assert torch.equal(out.detach(), qn.integer(x[:16]))
    w = torch.randn(16, 10, generator=torch.Generator().manual_seed(0))  # a linear read-out: its gradient is the network's alone
    (g,) = torch.autograd.grad((out * w).sum(), xg)
    xs = x[:16].clone().requires_grad_(True)
    (gs,) = torch.autograd.grad((qn.surrogate(xs) * w).sum(), xs)
    assert g.abs().sum() > 0 and torch.allclose(g, gs)
    exact = QuantizedNet(qn.integer, qn.surrogate, gradient=GradientMode.EXACT)
    xe = x[:16].clone().requires_grad_(True)
    (ge,) = torch.autograd.grad((exact(xe) * w).sum(), xe)
    assert float(ge.abs().sum()) == 0.0


def test_fp16_variant_holds_half_weights(variants: dict[str, Path]) -> None:
    v = load_model(str(variants["fp16"]))
    assert v.net.conv1.weight.dtype == torch.float16
    assert v(torch.rand(2, 1, 8, 8)).dtype == torch.float32


def test_test_images_are_refused_as_calibration_data(tmp_path: Path) -> None:
    test = load_dataset("digits", split="test")
    x = (test.images(slice(0, 40)).numpy()[:, 0] * 255).round().astype(np.uint8)
    np.savez(tmp_path / "cal.npz", x=x[..., None], y=test.y[:40].numpy())
    with pytest.raises(CompressionError, match="test split of digits"):
        compress(CompressConfig("zoo:digits-cnn", LoadOptions(), CompressionSpec.parse("int8-static"), tmp_path / "v.safetensors", calibration_data=f"npz:{tmp_path / 'cal.npz'}"))
    assert not (tmp_path / "v.safetensors").exists()


@pytest.mark.parametrize("text", ["int9", "prune-unstructured", "prune-unstructured:1.0", "prune-structured:abc", "fp16:0.5"])
def test_bad_methods_are_one_line_usage_errors(text: str, tmp_path: Path) -> None:
    from robustlab.cli import main

    r = CliRunner().invoke(main, ["compress", "--model", "zoo:digits-cnn", "--method", text, "--out", str(tmp_path / "v.safetensors")])
    assert r.exit_code == 2, r.output
    assert len(r.output.strip().splitlines()) == 1


def test_a_tampered_recipe_is_refused(variants: dict[str, Path], tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(variants["int8-static"]), framework="pt") as f:
        meta = f.metadata()
        sd = {k: f.get_tensor(k) for k in f.keys()}
    info = json.loads(meta["robustlab"])
    info["compression"]["method"] = "int8-dynamic"  # the tensors are a fake-quantized graph's, not a plain state dict
    bad = tmp_path / "bad.safetensors"
    save_file(sd, str(bad), metadata={**meta, "robustlab": json.dumps(info)})
    with pytest.raises(ModelLoadError, match="do not fit"):
        load_model(str(bad))


@pytest.mark.slow  # one epoch of QAT on the 1293 digits training images (about 20-60 s on 2 shared cores)
def test_qat_finetunes_the_fake_quantized_graph_and_loads_back(tmp_path: Path, digits_test) -> None:
    x, y = digits_test
    res = compress(CompressConfig("zoo:digits-cnn", LoadOptions(), CompressionSpec.parse("qat"), tmp_path / "qat.safetensors", calibration_n=128, epochs=1, batch_size=64))
    v = load_model(str(res.path))
    base = load_model("zoo:digits-cnn")
    assert isinstance(v.net, QuantizedNet) and _integer_kernels(v.net.integer, x[:4])
    rec = v.info.extra["compression"]
    assert rec["method"] == "qat" and rec["qat_epochs"] == 1 and rec["calibration"]["split"] == "train"
    assert not torch.equal(v.net.surrogate.conv1.weight, base.net.conv1.weight)  # the weights were trained
    with torch.no_grad():
        assert float((v(x).argmax(1) == y).float().mean()) >= 0.9


def test_a_named_feature_layer_survives_quantization(tmp_path: Path, digits_test) -> None:
    """--feature-layer fc1 on the base names the same layer of an int8 variant (its surrogate's), and the
    features come out of a plain forward pass of the variant (OOD detectors need them)."""
    x, _ = digits_test
    res = compress(CompressConfig("zoo:digits-cnn", LoadOptions(overrides={"feature_layer": "fc1"}), CompressionSpec.parse("int8-dynamic"), tmp_path / "q.safetensors"))
    v = load_model(str(res.path))
    assert v.info.feature_layer == "surrogate.fc1"
    with torch.no_grad():
        logits, feats = v.logits_and_features(x[:4])
    assert feats.shape == (4, 128) and torch.equal(logits, v.net.integer(x[:4]))


def test_training_images_in_an_npz_are_accepted_as_calibration_data(tmp_path: Path) -> None:
    """An npz has no splits (its test split is itself): it is compared with the model's test set only."""
    train = load_dataset("digits", split="train")
    x = (train.images(slice(0, 40)).numpy()[:, 0] * 255).round().astype(np.uint8)
    np.savez(tmp_path / "cal.npz", x=x[..., None], y=train.y[:40].numpy())
    res = compress(CompressConfig("zoo:digits-cnn", LoadOptions(), CompressionSpec.parse("int8-static"), tmp_path / "v.safetensors", calibration_data=f"npz:{tmp_path / 'cal.npz'}"))
    assert res.compression["calibration"]["n"] == 40 and res.compression["calibration"]["spec"].startswith("npz:")


@pytest.mark.parametrize("record", ["int8-static", {"method": "int9"}, {"method": "prune-structured", "sparsity": "x"}, {"sparsity": 0.5}, {"method": "prune-structured", "sparsity": 2}])
def test_a_hostile_compression_record_is_one_model_load_error(record: object, variants: dict[str, Path], tmp_path: Path) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(variants["fp16"]), framework="pt") as f:
        meta = f.metadata()
        sd = {k: f.get_tensor(k) for k in f.keys()}
    info = json.loads(meta["robustlab"])
    info["compression"] = record
    bad = tmp_path / "bad.safetensors"
    save_file(sd, str(bad), metadata={**meta, "robustlab": json.dumps(info)})
    with pytest.raises(ModelLoadError):
        load_model(str(bad))


def test_moving_an_int8_variant_leaves_the_integer_model_on_the_cpu(variants: dict[str, Path], digits_test) -> None:
    """RobustModel.to(device) must not move the int8 kernels' tensors (they only run on the CPU); the
    surrogate follows. Checked here with a dtype move, which reaches tensors the same way a device move does."""
    x, _ = digits_test
    v = load_model(str(variants["int8-static"]))
    before = v.net.integer(x[:4])
    v.to(torch.float64)
    assert next(v.net.surrogate.parameters()).dtype == torch.float64
    assert all(b.dtype != torch.float64 for b in v.net.integer.buffers())
    with torch.no_grad():
        assert torch.equal(v(x[:4].double()).float(), before)


def test_an_int8_file_from_the_fx_graph_mode_path_still_loads(tmp_path: Path, digits_test) -> None:
    """Variant files written before the PT2E move (FX graph mode, no 'stack' in the record) load
    through the labelled legacy path, as calibrated: quantized::* kernels, BPDA surrogate."""
    from robustlab.compress import quantize_fx as fx
    from robustlab.compress.pt2e import calibrate
    from robustlab.compress.variant import save_variant
    from robustlab.models.metadata import META_KEYS

    x, y = digits_test
    base = load_model("zoo:digits-cnn")
    prepared = fx.prepare_fake_quant(base.net, base.input_shape)
    calibrate(prepared, [base.normalise(load_dataset("digits", split="train").images(slice(0, 128)))])
    info = base.info.to_dict()
    rec = {"method": "int8-static", "sparsity": None, "base_sha256": base.info.sha256, "engine": "x86", "calibration": None}
    path = save_variant(fx.freeze(prepared).state_dict(), tmp_path / "fx.safetensors", metadata={k: info.get(k) for k in META_KEYS}, compression=rec)
    v = load_model(str(path))
    assert isinstance(v.net, QuantizedNet) and "stack" not in v.info.extra["compression"]
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        out = v(x)
    assert any(e.name.startswith("quantized::conv2d") for e in prof.events())
    assert float((out.argmax(1) == base(x).argmax(1)).float().mean()) >= 0.9
    xg = x[:8].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(v(xg).max(1).values.sum(), xg)
    assert g.abs().sum() > 0
