"""Models not in this repository, loaded as a user would (``factory:``, files), found by a third probe.

Each test names what the probe saw before the fix."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from robustlab.cli import main

MODELS = '''
import torch
from torch import nn


class Scaled(nn.Module):
    """The bundled digits CNN (a real model: its predictions vary and are mostly right), logits times ``scale``."""

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        from robustlab.models import load_model

        self.net = load_model("zoo:digits-cnn", device="cpu").net
        self.scale = scale

    def forward(self, x):
        return self.net(x) * self.scale


def tiny_logits():
    """Logits of about 1e-8 (an untrained torchvision MobileNetV3 gives 1e-10): their softmax rounds to
    exactly 1/K in float32, yet their argmax is well defined."""
    return Scaled(1e-9)


def tiny_vit():
    """A freshly built torchvision ViT (its head is zero-initialised: every logit is 0)."""
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(image_size=32, patch_size=8, num_layers=1, num_heads=1, hidden_dim=8, mlp_dim=8, num_classes=10)
'''


@pytest.fixture()
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    mod = tmp_path / "probe3_models.py"
    mod.write_text(MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("probe3_models", None)
    return "probe3_models"


def _evaluate(tmp_path: Path, out: str, spec: str, suite: str, *extra: str, data: str = "digits") -> SimpleNamespace:
    s = tmp_path / f"{out}.yaml"
    s.write_text(suite)
    r = CliRunner().invoke(main, ["evaluate", "--threads", "1", "--no-mlflow", "--no-report", "--quiet", "--model", spec,
                                  "--data", data, "--limit", "32", "--suite", str(s), "--out", str(tmp_path / out), *extra])
    path = tmp_path / out / "scorecard.json"
    return SimpleNamespace(code=r.exit_code, out=r.output, card=json.loads(path.read_text()) if path.is_file() else None)


def _metrics(card: dict) -> dict:
    return {k: v for c in card["checks"] for k, v in c["metrics"].items()}


def test_predictions_are_the_argmax_of_the_logits_not_of_their_rounded_softmax(tmp_path: Path, models: str) -> None:
    """Found by the probe: an untrained torchvision mobilenet_v3_small (logits ~1e-10) got clean/accuracy 0.125
    while the PGD check's clean accuracy and the OOD check's ID accuracy said 0.0: the clean and corruption
    checks took the argmax of the float32 softmax, which rounds to exactly 1/K, so every prediction was class 0."""
    import torch

    from robustlab.data import load_dataset

    suite = ("name: s\nchecks:\n  - check: clean\n  - check: corruption\n    params: {corruptions: [contrast], severities: [1]}\n"
             "  - check: pgd\n    id: pgd_linf\n    params: {norm: linf, steps: 2, epsilons: [0.001]}\n")
    got = _evaluate(tmp_path, "tiny", f"factory:{models}:tiny_logits", suite)
    assert got.code == 0, got.out
    data = load_dataset("digits", split="test").limit(32)
    net = sys.modules[models].tiny_logits().eval()
    with torch.no_grad():
        want = net(data.images(slice(0, 32))).argmax(1)
    assert len(set(want.tolist())) > 1  # the logits are not tied: the argmax is not just the first class
    clean = next(c for c in got.card["checks"] if c["id"] == "clean")
    assert clean["per_sample"]["prediction"] == want.tolist()
    acc = float((want == data.y).float().mean())
    m = _metrics(got.card)
    assert m["clean/accuracy"] == pytest.approx(acc)
    assert m["corruption/clean/accuracy"] == pytest.approx(acc)
    assert m["adversarial/pgd_linf/clean_accuracy"] == pytest.approx(acc)


OOD_FEATURES = ("name: s\nchecks:\n  - check: ood\n    params: {detectors: [msp, mahalanobis, knn], mahalanobis_eps: 0.0, knn_k: 5, fit_limit: 200,"
                " far: [noise:gaussian], near: [], shift: [], synthetic_n: 32, ood_limit: 32, cache: false}\n")


def _digits_net():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10)).eval()


def test_torchscript_models_skip_only_the_feature_detectors(tmp_path: Path) -> None:
    """Found by the probe: any TorchScript model under --suite standard exited 3 (the whole OOD check
    errored, MSP/energy/ODIN lost) with "the model has no nn.Linear layer; pass --feature-layer NAME", which
    is false (it has one, scripted) and cannot help (``--feature-layer fc`` then raised torch's
    "register_forward_hook is not supported on ScriptModules")."""
    import torch

    path = tmp_path / "net.ts"
    torch.jit.script(_digits_net()).save(str(path))
    got = _evaluate(tmp_path, "ts", str(path), OOD_FEATURES, "--trust-code")
    assert got.code == 0, got.out
    m = _metrics(got.card)
    assert "ood/msp/far/auroc" in m and not any(k.startswith(("ood/mahalanobis/", "ood/knn/")) for k in m)
    skipped = {a["evidence"]["detector"]: a for c in got.card["checks"] for a in c["audit"] if a["name"] == "ood_detector_skipped"}
    assert set(skipped) == {"mahalanobis", "knn"} and skipped["knn"]["verdict"] == "suspect"
    assert "TorchScript" in skipped["knn"]["evidence"]["reason"] and "--arch" in skipped["knn"]["evidence"]["reason"]
    bad = _evaluate(tmp_path, "ts_layer", str(path), OOD_FEATURES, "--trust-code", "--feature-layer", "4")
    assert bad.code == 2 and "TorchScript" in bad.out and "Traceback" not in bad.out, bad.out


def test_torch_export_models_give_penultimate_features(tmp_path: Path) -> None:
    """Found by the probe: a torch.export (.pt2) model's layers are never called as modules, so the same
    OOD check exited 3 ("no nn.Linear layer"). The features are now the input of its last linear op, as
    for the network it was exported from."""
    import torch

    from robustlab.models import load_model

    net = _digits_net()
    x = torch.rand(4, 1, 8, 8)
    path = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(net, (x,), dynamic_shapes=({0: torch.export.Dim("b", min=1, max=4096)},)), str(path))
    model = load_model(str(path), trust_code=True, device="cpu")
    logits, feats = model.logits_and_features(x)
    with torch.no_grad():
        assert torch.allclose(logits, net(x), atol=1e-6) and torch.allclose(feats, net[:4](x), atol=1e-6)
    assert tuple(model.head_linear().weight.shape) == (10, 8)  # ViM reads the head
    got = _evaluate(tmp_path, "export", str(path), OOD_FEATURES, "--trust-code")
    assert got.code == 0, got.out
    m = _metrics(got.card)
    assert "ood/mahalanobis/far/auroc" in m and "ood/knn/far/auroc" in m


def test_an_architecture_s_assumed_input_size_names_the_flag_that_fits_the_data(tmp_path: Path) -> None:
    """Found by the probe: the README's CI example (``--model model.safetensors --arch torchvision:resnet18
    --data samples:cifar10``, a torchvision ResNet-18 trained on CIFAR) exited 2 with "the model expects
    (3, 224, 224); choose matching --data or set --input-shape", which did not say what to set, and told a
    user who had set --input-shape 1,32,32 for a grey model on RGB npz data to set --input-shape."""
    import torch
    import torchvision
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10).eval()
    path = tmp_path / "model.safetensors"
    save_file(net.state_dict(), str(path))
    suite = "name: s\nchecks:\n  - check: clean\n"
    refused = _evaluate(tmp_path, "a", str(path), suite, "--arch", "torchvision:resnet18", data="samples:cifar10")
    assert refused.code == 2 and "pass --input-shape 3,32,32 if the model takes images of the data's shape" in refused.out, refused.out
    got = _evaluate(tmp_path, "b", str(path), suite, "--arch", "torchvision:resnet18", "--input-shape", "3,32,32", data="samples:cifar10")
    assert got.code == 0, got.out
    from robustlab.data import load_dataset

    data = load_dataset("samples:cifar10", split="test")
    with torch.no_grad():
        want = net(data.images(slice(0, len(data)))).argmax(1).tolist()
    assert got.card["checks"][0]["per_sample"]["prediction"] == want


def test_an_untrained_zeroed_head_is_not_called_sigmoid_scores(tmp_path: Path, models: str, caplog: pytest.LogCaptureFixture) -> None:
    """Found by the probe: a freshly built torchvision VisionTransformer (zero-initialised head: every logit 0)
    was warned about as "sigmoid or clamped scores? return logits from forward", which sends the user to the
    wrong place; the warning now says that every class gets the same logit (all predictions are class 0)."""
    import logging

    with caplog.at_level(logging.WARNING, logger="robustlab"):
        got = _evaluate(tmp_path, "vit", f"factory:{models}:tiny_vit", "name: s\nchecks:\n  - check: clean\n", data="samples:cifar10")
    assert got.code == 0, got.out
    assert "same logit" in caplog.text and "sigmoid" not in caplog.text


def test_a_feature_layer_of_a_torch_export_model_is_refused_at_load(tmp_path: Path) -> None:
    """Found by the probe: ``--feature-layer 4`` on a .pt2 model loaded and ran the suite until the OOD check
    stopped it with "the feature layer was not called during the forward pass; pass --feature-layer with a
    layer on the path to the output", advice no layer of such a model can follow."""
    import torch

    path = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(_digits_net(), (torch.rand(2, 1, 8, 8),), dynamic_shapes=({0: torch.export.Dim("b", min=1, max=4096)},)), str(path))
    got = _evaluate(tmp_path, "layer", str(path), OOD_FEATURES, "--trust-code", "--feature-layer", "4")
    assert got.code == 2 and "torch.export" in got.out and "leave --feature-layer out" in got.out and got.card is None, got.out


def test_a_model_exported_in_training_mode_is_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Found by the probe: a model exported before ``.eval()`` keeps random dropout and per-batch batch-norm
    statistics in its graph (``.eval()`` cannot be called on it): it ran with exit 0 and no word, its clean
    accuracy that of a random, batch-dependent network. An eval-mode export gets no warning."""
    import logging

    import torch

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(144, 10))
    dim = ({0: torch.export.Dim("b", min=1, max=4096)},)
    for mode in ("train", "eval"):
        getattr(net, mode)()
        torch.export.save(torch.export.export(net, (torch.rand(2, 1, 8, 8),), dynamic_shapes=dim), str(tmp_path / f"{mode}.pt2"))
    suite = "name: s\nchecks:\n  - check: clean\n"
    with caplog.at_level(logging.WARNING, logger="robustlab"):
        got = _evaluate(tmp_path, "train", str(tmp_path / "train.pt2"), suite, "--trust-code")
    assert got.code == 0 and "aten.batch_norm and aten.dropout in training mode" in caplog.text and "model.eval()" in caplog.text, got.out
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="robustlab"):
        got = _evaluate(tmp_path, "eval", str(tmp_path / "eval.pt2"), suite, "--trust-code")
    assert got.code == 0 and "training mode" not in caplog.text
