"""Models that are not plain float32 modules: quantized or with non-tensor state (the weights hash
crashed, exit 4), half / bf16 / float64 weights (refused with a message blaming the data), a model
that rejects a batch of one (the audit's single-point pass threw away a finished attack check), a
quantized forward without gradients (torch's allow_unused text), and a plugin's own RobustModel
subclass (silently rebuilt as a plain RobustModel, losing its forward)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from robustlab.cli import main

PLUGINS = Path(__file__).parent / "plugins"
SUITE = "name: tiny\nchecks:\n  - check: clean\n  - check: pgd\n    id: pgd_linf\n    params: {norm: linf, steps: 5, audit_samples: 8}\n"


def _run(tmp_path: Path, factory: str, monkeypatch: pytest.MonkeyPatch) -> tuple[int, dict, str]:
    monkeypatch.syspath_prepend(str(PLUGINS))
    tmp_path.mkdir(parents=True, exist_ok=True)
    suite = tmp_path / "tiny.yaml"
    suite.write_text(SUITE)
    out = tmp_path / "o"
    r = CliRunner().invoke(main, ["evaluate", "--model", f"factory:rl_test_models:{factory}", "--data", "digits", "--limit", "24", "--suite", str(suite),
                                  "--out", str(out), "--no-mlflow", "--no-report", "--num-classes", "10", "--input-shape", "1,8,8"])
    card = json.loads((out / "scorecard.json").read_text()) if (out / "scorecard.json").exists() else {}
    return r.exit_code, card, r.output


def _check(card: dict, cid: str) -> dict:
    return next(c for c in card["checks"] if c["id"] == cid)


@pytest.mark.parametrize("factory", ["quantized_dynamic", "extra_state"])
def test_models_with_non_tensor_state_load_and_hash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, factory: str) -> None:
    """Before: exit 4, "'tuple' object has no attribute 'dtype'" / "'dict' object has no attribute 'dtype'"."""
    code, card, out = _run(tmp_path, factory, monkeypatch)
    assert code in (0, 3), out
    assert "internal error" not in out
    assert len(card["model"]["sha256"]) == 64
    assert _check(card, "clean")["metrics"]["clean/accuracy"] > 0.8


def test_the_weights_hash_tells_models_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(PLUGINS))
    import rl_test_models as m

    from robustlab.models.files import state_dict_sha256

    a, b = m.quantized_dynamic(), m.quantized_dynamic()
    assert state_dict_sha256(a) == state_dict_sha256(b)
    assert state_dict_sha256(m.half_weights()) != state_dict_sha256(m.zoo_digits().net)
    assert state_dict_sha256(m.extra_state()) != state_dict_sha256(m.zoo_digits())


def test_a_quantized_forward_without_gradients_gets_advice_not_torch_text() -> None:
    from robustlab.runner import _errored

    entry = type("E", (), {"id": "pgd", "check": "pgd", "params": {}})()
    exc = RuntimeError("The differentiated Tensor at index 0 appears to not have been used in the graph. Set allow_unused=True if this is the desired behavior.")
    r = _errored(entry, exc)
    assert "does not depend differentiably on its input" in (r.reason or "") and "black-box" in (r.reason or "")


def test_half_precision_weights_take_float32_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: exit 2, 'Input type (float) and bias type (c10::Half)...; check that the data matches the model'."""
    code, card, out = _run(tmp_path, "half_weights", monkeypatch)
    assert code == 0, out
    ref = _run(tmp_path / "ref", "zoo_digits", monkeypatch)[1]
    assert _check(card, "clean")["metrics"]["clean/accuracy"] == _check(ref, "clean")["metrics"]["clean/accuracy"]


def test_an_audit_the_model_cannot_take_keeps_the_attack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: exit 3, 'check pgd_linf failed: ValueError: batch size 1 not supported' from the audit, the finished sweep lost."""
    code, card, out = _run(tmp_path, "no_batch_of_one", monkeypatch)
    assert code == 0, out
    pgd = _check(card, "pgd_linf")
    assert pgd["status"] == "ok" and "adversarial/pgd_linf/robust_accuracy" in pgd["metrics"]
    items = {a["name"]: a for a in pgd["audit"]}
    assert items["audit_not_run"]["verdict"] == "suspect" and "batch size 1" in items["audit_not_run"]["message"]


def test_a_plugins_robustmodel_subclass_keeps_its_forward() -> None:
    """Before: loaders._wrap rebuilt RobustModel(model.net, info), dropping the subclass's forward."""
    from torch import nn

    from robustlab.models.loaders import _wrap
    from robustlab.models.options import LoadedNet, LoadOptions
    from robustlab.models.wrapper import ModelInfo, RobustModel

    class Negated(RobustModel):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return -super().forward(x)

    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    sub = Negated(net, ModelInfo(spec="p:x", format="plugin", num_classes=10, input_shape=(1, 8, 8)))
    wrapped = _wrap("p:x", LoadedNet(sub, {}), LoadOptions(overrides={"mean": (0.5,), "std": (0.25,)}))
    assert type(wrapped) is Negated
    x = torch.rand(3, 1, 8, 8)
    assert torch.allclose(wrapped(x), -net((x - 0.5) / 0.25))


def test_features_come_from_the_head_even_when_it_is_registered_first() -> None:
    """Before: the last *registered* nn.Linear was taken as the head, so a module that defines its head
    first gave Mahalanobis/KNN/ViM the 1024-d input of the hidden layer instead of the 128-d penultimate features."""
    from torch import nn

    from robustlab.models.wrapper import ModelInfo, RobustModel

    class Reordered(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = nn.Linear(128, 10)  # registered before the layer that feeds it
            self.hidden = nn.Linear(64, 128)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.relu(self.hidden(x.flatten(1))))

    net = Reordered()
    m = RobustModel(net, ModelInfo(spec="t", format="test", num_classes=10, input_shape=(1, 8, 8)))
    assert m.head_linear() is net.head
    logits, feats = m.logits_and_features(torch.rand(4, 1, 8, 8))
    assert logits.shape == (4, 10) and feats.shape == (4, 128)
    from robustlab.ood.vim import last_linear

    assert last_linear(m) is net.head


def test_a_class_count_that_does_not_match_the_output_names_the_width_seen() -> None:
    """Before: 'the model output has shape (40, 10), expected (40, 128); check --num-classes', with 128 robustlab's own
    guess and nothing saying what to pass."""
    from torch import nn

    from robustlab.errors import ModelOutputError
    from robustlab.models.wrapper import ModelInfo, RobustModel

    m = RobustModel(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), ModelInfo(spec="t", format="test", num_classes=128, input_shape=(1, 8, 8)))
    with pytest.raises(ModelOutputError, match=r"outputs 10 scores per input, but 128 classes were expected .*pass --num-classes 10"):
        m.check_output(m(torch.rand(4, 1, 8, 8)), 4)


# -- models and data built in tmp_path (probe of unusual models, round 3) -------------------------

TINY_NET = (
    "import torch.nn as nn\n\ndef net():\n    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))\n\n"
    "class Grey(nn.Module):\n    def forward(self, x):\n        return x.mean(1, keepdim=True)\n\n"
    "def pooled():\n    return nn.Sequential(Grey(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(16, 10))\n\n"
    "def lazy():\n    return nn.Sequential(Grey(), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.LazyLinear(10))\n\n"
    "class Holder(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.module = net()\n\n"
    "    def forward(self, x):\n        return self.module(x)\n\n"
    "def holder():\n    return Holder()\n"
)


def _evaluate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *args: str, suite: str = "name: c\nchecks:\n  - check: clean\n") -> tuple[int, dict, str]:
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "rl_probe_tiny.py").write_text(TINY_NET)
    (tmp_path / "s.yaml").write_text(suite)
    out = tmp_path / f"o{len(list(tmp_path.glob('o*')))}"
    r = CliRunner().invoke(main, ["evaluate", *args, "--suite", str(tmp_path / "s.yaml"), "--out", str(out), "--no-mlflow", "--no-report", "--threads", "1"])
    card = json.loads((out / "scorecard.json").read_text()) if (out / "scorecard.json").exists() else {}
    return r.exit_code, card, r.output


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "_orig_mod.module."])
@pytest.mark.parametrize("ext", ["safetensors", "pt"])
def test_weights_saved_from_a_wrapped_model_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefix: str, ext: str) -> None:
    """Before: exit 2 'the weights ... do not fit architecture ...; pass the architecture the weights were saved
    from' for DataParallel (``module.``, safetensors only) and torch.compile (``_orig_mod.``) state dicts."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    sd = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).state_dict()
    plain, wrapped = tmp_path / f"plain.{ext}", tmp_path / f"wrapped.{ext}"
    for path, d in ((plain, sd), (wrapped, {prefix + k: v for k, v in sd.items()})):
        save_file(d, str(path)) if ext == "safetensors" else torch.save(d, path)
    common = ["--arch", "factory:rl_probe_tiny:net", "--data", "digits", "--limit", "40", "--input-shape", "1,8,8"]
    code, card, out = _evaluate(tmp_path, monkeypatch, "--model", str(wrapped), *common)
    assert code == 0, out
    ref = _evaluate(tmp_path, monkeypatch, "--model", str(plain), *common)[1]
    assert _check(card, "clean")["metrics"] == _check(ref, "clean")["metrics"]


@pytest.mark.parametrize("ext", ["safetensors", "pt"])
def test_an_architecture_whose_network_is_named_module_keeps_its_keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, ext: str) -> None:
    """Every key of this architecture starts with ``module.`` because its submodule is named so: the weights load
    as saved (the DataParallel prefix is dropped only when the keys as saved do not fit). Before, a ``.pt`` state
    dict always lost ``module.`` (exit 2, '... do not fit architecture ...'); safetensors already kept it."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    exec(TINY_NET, ns := {})  # noqa: S102 - the test's own module text
    sd = ns["holder"]().state_dict()
    assert all(k.startswith("module.") for k in sd)
    path = tmp_path / f"holder.{ext}"
    save_file(sd, str(path)) if ext == "safetensors" else torch.save(sd, path)
    code, card, out = _evaluate(tmp_path, monkeypatch, "--model", str(path), "--arch", "factory:rl_probe_tiny:holder",
                                "--data", "digits", "--limit", "40", "--input-shape", "1,8,8")
    assert code == 0, out


@pytest.mark.parametrize(("data", "said"), [("samples:fashion-mnist", "data set 'fashion-mnist'"), ("npz", "--dataset")])
def test_an_attack_without_a_budget_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: str, said: str) -> None:
    """Before: 'no standard adversarial budget is known for this model's data set; set `epsilons:` ... (e.g. [8/255])'
    for a 3x32x48 npz (no word of --dataset, the fix) and for samples:fashion-mnist (no word of which data set)."""
    import numpy as np

    if data == "npz":
        np.savez(tmp_path / "rect.npz", x=np.random.default_rng(0).random((6, 3, 32, 48), dtype=np.float32), y=np.arange(6))
        data = f"npz:{tmp_path / 'rect.npz'}"
    suite = "name: p\nchecks:\n  - check: pgd\n    params: {norm: linf, steps: 2, audit: false}\n"
    code, card, out = _evaluate(tmp_path, monkeypatch, "--model", "factory:rl_probe_tiny:pooled", "--num-classes", "10", "--data", data, "--limit", "6", suite=suite)
    assert code == 3, out
    reason = _check(card, "pgd")["reason"]
    assert said in reason and "epsilons:" in reason and "8/255" not in reason, reason


def test_a_lazy_module_without_weights_is_a_user_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: exit 4, 'internal error: ValueError: Attempted to use an uninitialized parameter' (the weights hash of a
    factory with nn.LazyLinear). Its weights loaded from a file still evaluate."""
    from safetensors.torch import save_file

    code, _, out = _evaluate(tmp_path, monkeypatch, "--model", "factory:rl_probe_tiny:lazy", "--num-classes", "10", "--data", "digits", "--limit", "20")
    assert code == 2, out
    assert "LazyLinear" in out and "dummy batch" in out and "internal error" not in out
    import rl_probe_tiny

    net = rl_probe_tiny.lazy()
    net(torch.zeros(1, 1, 8, 8))
    save_file(net.state_dict(), str(tmp_path / "lazy.safetensors"))
    code, card, out = _evaluate(tmp_path, monkeypatch, "--model", str(tmp_path / "lazy.safetensors"), "--arch", "factory:rl_probe_tiny:lazy", "--data", "digits", "--limit", "20")
    assert code == 0, out
    assert card["model"]["num_classes"] == 10
