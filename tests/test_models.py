import json
import sys
from pathlib import Path

import pytest
import torch

from robustlab.errors import ModelLoadError, TrustError, UnknownNameError
from robustlab.models import load_model
from robustlab.models.architectures import CifarResNet, DigitsCNN

PLUGINS = str(Path(__file__).parent / "plugins")


@pytest.fixture(autouse=True)
def _plugins_on_path(monkeypatch):
    monkeypatch.syspath_prepend(PLUGINS)


def test_zoo_digits_contract(digits_model, digits_data):
    m = digits_model
    assert m.bounds == (0.0, 1.0) and m.num_classes == 10 and m.input_shape == (1, 8, 8)
    x = digits_data.images()
    logits, feats = m.logits_and_features(x[:5])
    assert logits.shape == (5, 10) and feats.shape == (5, 128)
    acc = (m.predict_logits(x).argmax(1) == digits_data.y).float().mean().item()
    assert acc > 0.95
    assert m.info.sha256 and len(m.info.sha256) == 64 and not m.info.trusted


def test_normalisation_inside_forward():
    from robustlab.models import ModelInfo, RobustModel

    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
    m = RobustModel(net, ModelInfo(spec="t", format="t", num_classes=2, mean=(0.5, 0.4, 0.3), std=(0.2, 0.2, 0.2)))
    x = torch.rand(3, 3, 4, 4)
    mean = torch.tensor([0.5, 0.4, 0.3]).view(1, 3, 1, 1)
    assert torch.allclose(m(x), net((x - mean) / 0.2), atol=1e-6)


def test_cifar_resnet_matches_plain_loop(cifar_model):
    """Our architecture + zoo loading gives the same logits as the reference definition in pyautoattack."""
    from importlib import resources

    import importlib.util

    spec = importlib.util.spec_from_file_location("pa_resnet", str(resources.files("pyautoattack").joinpath("examples/resnet.py")))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    ref = mod.ResNet18()
    ref.load_state_dict(torch.load(cifar_model.info.path, map_location="cpu", weights_only=True))
    ref.eval()
    from robustlab.data import load_dataset

    x = load_dataset("samples:cifar10").images()
    with torch.no_grad():
        assert torch.allclose(cifar_model(x), ref(x), atol=1e-4)


def test_state_dict_with_arch(tmp_path):
    net = DigitsCNN()
    p = tmp_path / "w.pt"
    torch.save(net.state_dict(), p)
    with pytest.raises(ModelLoadError, match="--arch"):
        load_model(str(p))
    m = load_model(str(p), arch="zoo-arch:digits-cnn", overrides={"input_shape": (1, 8, 8)})
    x = torch.rand(2, 1, 8, 8)
    assert torch.allclose(m(x), net(x), atol=1e-6)
    # sidecar metadata
    (tmp_path / "w.json").write_text(json.dumps({"architecture": "zoo-arch:digits-cnn", "bounds": [0, 1], "dataset": "digits"}))
    m2 = load_model(str(p))
    assert m2.info.dataset == "digits" and m2.info.architecture == "zoo-arch:digits-cnn"
    # a wrong architecture is a clear error
    with pytest.raises(ModelLoadError, match="do not fit"):
        load_model(str(p), arch="zoo-arch:cifar-resnet18")


def test_safetensors_and_torchvision_arch(tmp_path):
    import torchvision
    from safetensors.torch import save_file

    net = torchvision.models.resnet18(num_classes=10).eval()
    p = tmp_path / "r18.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(p))
    m = load_model(str(p), arch="torchvision:resnet18")
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(m(x), net(x), atol=1e-5)
    assert m.num_classes == 10


def test_factory_spec():
    m = load_model("factory:rl_test_models:tiny")
    assert m.num_classes == 10 and m.info.format == "factory" and len(m.info.sha256) == 64
    with pytest.raises(ModelLoadError, match="not a torch.nn.Module"):
        load_model("factory:rl_test_models:not_a_module")
    with pytest.raises(ModelLoadError, match="cannot import"):
        load_model("factory:no_such_module_xyz:f")


def test_trust_required_for_code_formats(tmp_path):
    sys.path.insert(0, PLUGINS)
    import rl_test_models

    net = rl_test_models.tiny()
    ts = tmp_path / "m.torchscript.pt"
    torch.jit.script(net).save(str(ts))
    pk = tmp_path / "whole.pt"
    torch.save(net, pk)
    ex = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(net, (torch.rand(2, 1, 8, 8),), dynamic_shapes={"x": {0: torch.export.Dim("batch")}}), str(ex))
    x = torch.rand(3, 1, 8, 8)
    for p in (ts, pk, ex):
        with pytest.raises(TrustError, match="--trust-code"):
            load_model(str(p))
        m = load_model(str(p), trust_code=True, overrides={"num_classes": 10})
        assert m.info.trusted
        with torch.no_grad():
            assert torch.allclose(m(x), net(x), atol=1e-5)


def test_corrupt_and_truncated_checkpoints(tmp_path):
    good = tmp_path / "good.pt"
    torch.save(DigitsCNN().state_dict(), good)
    data = good.read_bytes()
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(data[: len(data) // 2])
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"this is not a checkpoint" * 10)
    st = tmp_path / "bad.safetensors"
    st.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    for p in (trunc, junk, st):
        with pytest.raises(ModelLoadError):
            load_model(str(p), arch="zoo-arch:digits-cnn")


def test_unknown_specs_suggest():
    with pytest.raises(UnknownNameError, match="zoo"):
        load_model("zo:digits-cnn")
    with pytest.raises(UnknownNameError, match="digits-cnn"):
        load_model("zoo:digit-cnn")
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model("missing_model.pt")


def test_file_metadata_cannot_name_factory(tmp_path):
    from robustlab.models.save import save_model

    p = tmp_path / "m.safetensors"
    with pytest.raises(Exception):
        save_model(DigitsCNN(), p, architecture="factory:os:system", metadata={})
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in DigitsCNN().state_dict().items()}, str(p), metadata={"robustlab": json.dumps({"architecture": "factory:rl_test_models:tiny"})})
    with pytest.raises(TrustError, match="never runs code that a file names") as e:
        load_model(str(p))
    # the refusal says the file asked for it and hands out no ready-to-paste way to run it
    assert "rl_test_models" not in str(e.value) and "--arch factory" not in str(e.value)


def test_robustbench_is_importable_and_offline(tmp_path):
    from robustlab.models.robustbench_compat import import_robustbench

    import_robustbench()
    import robustbench.eval  # noqa: F401  (imports `autoattack`)

    with pytest.raises(ModelLoadError, match="--download"):
        load_model("robustbench:Standard", model_dir=str(tmp_path))
    with pytest.raises(UnknownNameError):
        load_model("robustbench:Standrd", model_dir=str(tmp_path))


def test_cifar_resnet_architecture_keys_match_checkpoint(cifar_model):
    sd = torch.load(cifar_model.info.path, map_location="cpu", weights_only=True)
    assert set(sd) == set(CifarResNet().state_dict())
