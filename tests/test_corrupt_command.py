"""``robustlab corrupt`` (CIFAR-10-C layout writer), reading it back, the check's protocol param and
records, and ``robustlab compare``'s refusal of mixed protocols."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from robustlab.checks.base import CHECKS, RunContext
from robustlab.cli import main
from robustlab.corruptions.precomputed import open_precomputed
from robustlab.corruptions.writer import render
from robustlab.data.base import Dataset
from robustlab.errors import DataError, SuiteError
from robustlab.models.wrapper import ModelInfo, RobustModel
from robustlab.scorecard import Scorecard
from robustlab.store import ResultStore


class _Prototypes(nn.Module):
    def __init__(self, protos: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("protos", protos)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -20.0 * ((x[:, None] - self.protos[None]) ** 2).flatten(2).mean(2)


def _setup(n: int = 20, c: int = 3, hw: int = 32) -> tuple[RobustModel, Dataset]:
    g = torch.Generator().manual_seed(0)
    protos = torch.nn.functional.interpolate(torch.rand(10, c, 4, 4, generator=g), size=(hw, hw), mode="bilinear", align_corners=False)
    model = RobustModel(_Prototypes(protos), ModelInfo(spec="test", format="test", num_classes=10, input_shape=(c, hw, hw)))
    y = torch.arange(n) % 10
    x = (protos[y] + 0.15 * torch.randn(n, c, hw, hw, generator=g)).clamp(0, 1)
    x = (x * 255).round() / 255
    return model, Dataset(spec="synthetic", split="test", ids=[f"s/{i}" for i in range(n)], y=y, classes=[str(i) for i in range(10)], x=x)


def _ctx(model: RobustModel, data: Dataset, tmp: Path, seed: int = 0) -> RunContext:
    return RunContext(
        model=model, data=data, seed=seed, batch_size=7, device=torch.device("cpu"), out_dir=tmp,
        store=ResultStore(None, {"t": 1}), load_data=lambda *a, **k: data, progress=lambda it, total=None, desc="": it,
    )


def _run(raw: dict, model: RobustModel, data: Dataset, tmp: Path, seed: int = 0):  # type: ignore[no-untyped-def]
    cls = CHECKS.get("corruption")
    return cls(id="corruption", params=cls.parse_params(raw)).run(_ctx(model, data, tmp, seed))


NAMES = ["gaussian_noise", "fog", "contrast", "frost"]


def test_render_round_trip_equals_on_the_fly(tmp_path: Path) -> None:
    model, data = _setup()
    out = tmp_path / "C"
    manifest_path = render(data, out, corruptions=NAMES, protocol="cifar-c", seed=3, batch_size=6)
    manifest = json.loads(manifest_path.read_text())
    assert manifest["protocol"] == "cifar-c" and manifest["seed"] == 3 and manifest["n"] == 20
    assert "make_cifar_c.py" in manifest["protocol_source"]
    arr = np.load(out / "fog.npy")
    assert arr.shape == (100, 32, 32, 3) and arr.dtype == np.uint8
    assert np.load(out / "labels.npy").tolist() == data.y.tolist() * 5
    assert not (out / ".partial").exists()
    pre = open_precomputed(out, NAMES)
    assert pre.manifest["protocol"] == "cifar-c" and pre.ids("fog", 1) == data.ids
    raw = {"corruptions": NAMES, "protocol": "cifar-c", "baseline": "none"}
    fly = _run(raw, model, data, tmp_path, seed=3)
    back = _run({**raw, "precomputed": str(out)}, model, data, tmp_path, seed=3)
    keys = [k for k in fly.metrics if k.endswith("/accuracy") and "/s" in k]
    assert len(keys) == len(NAMES) * 5
    assert {k: fly.metrics[k] for k in keys} == {k: back.metrics[k] for k in keys}
    assert min(fly.metrics[k] for k in keys) < 1.0  # the corruptions do move the accuracy
    eces = [k.replace("/accuracy", "/ece") for k in keys]  # confidences: the images are the same, not only the argmax
    assert {k: fly.metrics[k] for k in eces} == pytest.approx({k: back.metrics[k] for k in eces}, abs=1e-6)
    assert back.params["protocol_resolved"] == "cifar-c" and fly.params["protocol_resolved"] == "cifar-c"
    with pytest.raises(SuiteError, match="rendered under cifar-c"):
        _run({**raw, "protocol": "imagenet-c", "precomputed": str(out)}, model, data, tmp_path, seed=3)
    other = _run(raw, model, data, tmp_path, seed=4)
    assert any(other.metrics[k] != fly.metrics[k] for k in keys if "gaussian" in k or "fog" in k or "frost" in k)


def test_render_resumes_and_refuses_other_settings(tmp_path: Path) -> None:
    model, data = _setup(n=6)
    out = tmp_path / "C"
    partial = out / ".partial"
    partial.mkdir(parents=True)
    # an interrupted run: same settings, two blocks done (one deliberately marked so we see it kept)
    first = render(data, tmp_path / "ref", corruptions=["fog"], protocol="cifar-c", seed=0)
    full = np.load(first.parent / "fog.npy")
    render_cfg = json.loads(first.read_text())
    cfg = {k: render_cfg[k] for k in ("protocol", "protocol_source", "backend", "seed", "corruptions", "data_spec", "n", "ids_sha256", "content_sha256", "image_shape")}
    (partial / "config.json").write_text(json.dumps(cfg, indent=1))
    marked = full[:6].copy()
    marked[:, 0, 0, 0] = 7
    np.save(partial / "fog.s1.npy", marked)
    render(data, out, corruptions=["fog"], protocol="cifar-c", seed=0)
    got = np.load(out / "fog.npy")
    assert (got[:6, 0, 0, 0] == 7).all()  # block 1 was reused, not recomputed
    np.testing.assert_array_equal(got[6:], full[6:])
    with pytest.raises(DataError, match="finished render"):
        render(data, out, corruptions=["fog"], protocol="cifar-c", seed=0)
    (tmp_path / "D" / ".partial").mkdir(parents=True)
    (tmp_path / "D" / ".partial" / "config.json").write_text(json.dumps({**cfg, "seed": 1}))
    with pytest.raises(DataError, match="seed"):
        render(data, tmp_path / "D", corruptions=["fog"], protocol="cifar-c", seed=0)


def test_cli_corrupt_writes_layout(tmp_path: Path) -> None:
    _, data = _setup(n=4, c=3, hw=32)
    npz = tmp_path / "d.npz"
    np.savez(npz, x=(data.x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8), y=data.y.numpy())  # type: ignore[union-attr]
    r = CliRunner().invoke(main, ["corrupt", "--data", f"npz:{npz}", "--out", str(tmp_path / "o"), "--corruptions", "contrast,gaussian_noise", "-q"])
    assert r.exit_code == 0, r.output
    m = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert m["protocol"] == "cifar-c" and sorted(m["files"]) == ["contrast.npy", "gaussian_noise.npy", "ids.json", "labels.npy"]
    r = CliRunner().invoke(main, ["corrupt", "--data", f"npz:{npz}", "--out", str(tmp_path / "p"), "--corruptions", "fogg"])
    assert r.exit_code == 2 and "fog" in r.output


def test_protocol_param_recorded_and_validated(tmp_path: Path) -> None:
    model, data = _setup(n=10)
    res = _run({"corruptions": ["gaussian_noise"], "severities": [5], "baseline": "none"}, model, data, tmp_path)
    assert res.params["protocol"] == "auto" and res.params["protocol_resolved"] == "cifar-c"
    assert "corruption/protocol" in res.definitions and "make_cifar_c.py" in res.definitions["corruption/protocol"]
    inet = _run({"corruptions": ["gaussian_noise"], "severities": [5], "baseline": "none", "protocol": "imagenet-c"}, model, data, tmp_path)
    assert inet.params["protocol_resolved"] == "imagenet-c"
    assert inet.metrics["corruption/gaussian_noise/s5/accuracy"] <= res.metrics["corruption/gaussian_noise/s5/accuracy"]  # sigma .38 vs .10
    cls = CHECKS.get("corruption")
    with pytest.raises(SuiteError, match="protocol"):
        cls.parse_params({"protocol": "cifar10-c"})


def test_compare_refuses_mixed_protocols(tmp_path: Path) -> None:
    model, data = _setup(n=10)
    cards = []
    for proto in ("cifar-c", "imagenet-c"):
        res = _run({"corruptions": ["contrast"], "severities": [1], "baseline": "none", "protocol": proto}, model, data, tmp_path)
        card = Scorecard(tool={"name": "robustlab"}, model={}, data={}, suite={}, environment={}, run={}, checks=[res])
        path = tmp_path / f"{proto}.json"
        card.write(path)
        cards.append(str(path))
    r = CliRunner().invoke(main, ["compare", cards[0], cards[1]])
    assert r.exit_code == 2 and "protocols differ" in r.output
    r = CliRunner().invoke(main, ["compare", cards[0], cards[1], "--allow-protocol-mismatch"])
    assert r.exit_code == 0 and "protocols differ" in r.output
    r = CliRunner().invoke(main, ["compare", cards[0], cards[0]])
    assert r.exit_code == 0 and "protocols differ" not in r.output
    from robustlab.report import render_report

    html = render_report(Scorecard.read(cards[0]))
    assert "Protocol: cifar-c" in html and "make_cifar_c.py" in html  # header of the corruption section
