"""Model loading found wrong by a probe: the class count of a state dict must not depend on the order
of its keys (safetensors sorts them by name), nor on an unused layer registered after the head; a
state dict that does not fit names the keys that differ; a sidecar named ``model.pt.json`` is read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from robustlab.cli import main
from robustlab.errors import ModelLoadError
from robustlab.models import load_model
from robustlab.models.files import infer_num_classes

CLEAN = str(Path(__file__).parent / "suites" / "clean.yaml")
FAST = ["--threads", "1", "--no-mlflow", "--quiet", "--no-report"]
MOD = "rl_probe_loading_models"

FACTORIES = '''
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.convnext import CNBlockConfig, ConvNeXt


class Net(nn.Module):
    """1x8x8 images; fc1 is registered before the head fc, but sorts after it by name."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.c1 = nn.Conv2d(1, 16, 3, padding=1)
        self.fc1 = nn.Linear(16 * 4 * 4, 64)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.c1(x)), 2)
        return self.fc(F.relu(self.fc1(x.flatten(1))))


def build(num_classes=10):
    return Net(num_classes)


def build_required(num_classes):
    return Net(num_classes)


class ExtraLinear(nn.Module):
    """An unused linear layer registered after the head."""

    def __init__(self):
        super().__init__()
        self.m = Net(10)
        self.aux = nn.Linear(64, 7)

    def forward(self, x):
        return self.m(x)


def extra_linear():
    return ExtraLinear()


class FixedBatch(nn.Module):
    """Fails on any batch but 16: the probe forward fails, the layer heuristic decides."""

    def __init__(self):
        super().__init__()
        self.m = Net(10)

    def forward(self, x):
        if x.shape[0] != 16:
            raise RuntimeError(f"batch {x.shape[0]}")
        return self.m(x)


def fixed_batch():
    return FixedBatch()


class Noisy(nn.Module):
    def __init__(self):
        super().__init__()
        self.m = Net(10)
        self.bn = nn.BatchNorm1d(10)

    def forward(self, x):
        return self.bn(self.m(x + 0.1 * torch.randn_like(x)))


def small_convnext(num_classes=1000):
    """torchvision's ConvNeXt, two tiny stages: its MLP weights sort after classifier.2.weight."""
    return ConvNeXt([CNBlockConfig(8, 16, 1), CNBlockConfig(16, None, 1)], num_classes=num_classes)
'''


@pytest.fixture(scope="module")
def factories(tmp_path_factory):
    import importlib
    import sys

    folder = tmp_path_factory.mktemp("factories")
    (folder / f"{MOD}.py").write_text(FACTORIES)
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module(MOD)
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop(MOD, None)


def _save(net: torch.nn.Module, path: Path) -> Path:
    sd = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    if path.suffix == ".safetensors":
        save_file(sd, str(path))
    else:
        torch.save(sd, path)
    return path


def _one_error_line(r) -> str:
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    line = r.stderr.strip()
    assert line.startswith("error:") and "\n" not in line and "Traceback" not in line, r.stderr
    return line


def _same(m, net, shape) -> None:
    x = torch.rand(3, *shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(m(x), net.eval()(x), atol=1e-5)


# -- 1. the head of a state dict, whatever the order of its keys ---------------------------------------
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_state_dict_classes_do_not_depend_on_key_order(tmp_path, factories, suffix):
    net = factories.Net(3)
    p = _save(net, tmp_path / f"w{suffix}")
    m = load_model(str(p), arch=f"factory:{MOD}:build")
    assert m.num_classes == 3
    _same(m, net, (1, 8, 8))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_torchvision_convnext_state_dict(tmp_path, factories, suffix):
    """torchvision's ConvNeXt class (small stages); its default head has 1000 classes, the weights 5."""
    net = factories.small_convnext(num_classes=5)
    p = _save(net, tmp_path / f"cnx{suffix}")
    m = load_model(str(p), arch=f"factory:{MOD}:small_convnext")
    assert m.num_classes == 5
    _same(m, net, (3, 32, 32))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_torchvision_spec_state_dict(tmp_path, suffix):
    import torchvision

    net = torchvision.models.mobilenet_v3_small(num_classes=7)
    p = _save(net, tmp_path / f"mnv3{suffix}")
    m = load_model(str(p), arch="torchvision:mobilenet_v3_small", overrides={"input_shape": (3, 64, 64)})
    assert m.num_classes == 7
    _same(m, net, (3, 64, 64))


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".safetensors"])  # the .pt copy loaded before too; one 28M-parameter build is enough for CI
def test_torchvision_convnext_tiny_spec(tmp_path, suffix):
    """The probe's case: convnext_tiny weights with 10 classes, read as 768 classes before."""
    import torchvision

    net = torchvision.models.convnext_tiny(num_classes=10)
    p = _save(net, tmp_path / f"cnx{suffix}")
    m = load_model(str(p), arch="torchvision:convnext_tiny", overrides={"input_shape": (3, 32, 32)})
    assert m.num_classes == 10
    _same(m, net, (3, 32, 32))


def test_factory_that_requires_num_classes(tmp_path, factories):
    p = _save(factories.Net(4), tmp_path / "w.safetensors")
    assert load_model(str(p), arch=f"factory:{MOD}:build_required").num_classes == 4


# -- 2. a state dict that does not fit names what differs ---------------------------------------------------
def test_wrong_architecture_names_missing_and_unexpected_keys(tmp_path, factories):
    p = _save(factories.Net(10), tmp_path / "w.safetensors")
    r = CliRunner().invoke(main, ["evaluate", "--model", str(p), "--arch", f"factory:{MOD}:small_convnext", "--data", "digits", "--limit", "8",
                                  "--suite", CLEAN, "--out", str(tmp_path / "o"), *FAST])
    line = _one_error_line(r)
    assert "do not fit architecture" in line
    assert "key(s) of the model missing from the file (features.0.0.weight, features.0.0.bias, features.0.1.weight, ...)" in line
    assert "6 unexpected key(s) in the file (c1.bias, c1.weight, fc.bias, ...)" in line
    assert "--arch" in line


def test_wrong_class_count_names_the_size_mismatch(tmp_path, factories):
    p = _save(factories.Net(10), tmp_path / "w.pt")
    r = CliRunner().invoke(main, ["evaluate", "--model", str(p), "--arch", f"factory:{MOD}:build", "--num-classes", "4", "--data", "digits",
                                  "--limit", "8", "--suite", CLEAN, "--out", str(tmp_path / "o"), *FAST])
    line = _one_error_line(r)
    assert "2 size mismatch(es) (fc.weight: (10, 64) in the file, (4, 64) in the model, fc.bias: (10,) in the file, (4,) in the model)" in line
    assert "missing" not in line and "unexpected" not in line and "--num-classes" in line


# -- 3. the class count is what the model outputs ------------------------------------------------------------
def test_unused_linear_after_the_head_is_not_the_head(tmp_path, factories):
    assert load_model(f"factory:{MOD}:extra_linear").num_classes == 10
    assert load_model(f"factory:{MOD}:extra_linear", overrides={"input_shape": (1, 8, 8)}).num_classes == 10
    r = CliRunner().invoke(main, ["evaluate", "--model", f"factory:{MOD}:extra_linear", "--data", "digits", "--limit", "32",
                                  "--suite", CLEAN, "--out", str(tmp_path / "o"), *FAST])
    assert r.exit_code == 0, (r.exit_code, r.output, r.exception)
    card = json.loads((tmp_path / "o" / "scorecard.json").read_text())
    assert card["model"]["num_classes"] == 10


def test_probe_falls_back_to_the_last_linear_and_leaves_no_trace(factories):
    assert infer_num_classes(factories.fixed_batch()) == 10  # the forward fails: the last registered linear
    net = factories.Noisy().train()
    mean = net.bn.running_mean.clone()
    state = torch.get_rng_state()
    assert infer_num_classes(net) == 10
    assert net.training and all(m.training for m in net.modules())
    assert torch.equal(torch.get_rng_state(), state) and torch.equal(net.bn.running_mean, mean)


# -- 4. sidecars: model.json and model.pt.json ----------------------------------------------------------------
@pytest.mark.parametrize("sidecar", ["w.json", "w.pt.json"])
def test_sidecar_named_with_or_without_the_extension(tmp_path, factories, sidecar):
    p = _save(factories.Net(10), tmp_path / "w.pt")
    (tmp_path / sidecar).write_text(json.dumps({"bounds": [0, 255], "dataset": "digits"}))
    m = load_model(str(p), arch=f"factory:{MOD}:build")
    assert m.info.bounds == (0.0, 255.0) and m.info.dataset == "digits"


def test_sidecar_beats_the_folder_file_and_two_must_agree(tmp_path, factories):
    p = _save(factories.Net(10), tmp_path / "w.pt")
    (tmp_path / "robustlab.json").write_text(json.dumps({"bounds": [0, 1]}))
    (tmp_path / "w.pt.json").write_text(json.dumps({"bounds": [0, 255]}))
    assert load_model(str(p), arch=f"factory:{MOD}:build").info.bounds == (0.0, 255.0)
    (tmp_path / "w.json").write_text(json.dumps({"bounds": [0, 255]}))  # the same content: fine
    assert load_model(str(p), arch=f"factory:{MOD}:build").info.bounds == (0.0, 255.0)
    (tmp_path / "w.json").write_text(json.dumps({"bounds": [-1, 1]}))
    with pytest.raises(ModelLoadError, match="disagree"):
        load_model(str(p), arch=f"factory:{MOD}:build")
    r = CliRunner().invoke(main, ["evaluate", "--model", str(p), "--arch", f"factory:{MOD}:build", "--data", "digits", "--limit", "8",
                                  "--suite", CLEAN, "--out", str(tmp_path / "o"), *FAST])
    line = _one_error_line(r)
    assert "w.json" in line and "w.pt.json" in line and "keep one" in line
