"""The ``corruption`` check: parameters, metrics, baselines (CE / mCE / relative mCE), pre-rendered
CIFAR-C and ImageNet-C folders, batch-size independence and resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robustlab.checks.base import CHECKS, RunContext
from robustlab.checks.corruption_baseline import baseline_from_scorecard
from robustlab.corruptions.metrics import Baseline, alexnet_baseline, corruption_error, relative_corruption_error
from robustlab.corruptions.precomputed import open_precomputed
from robustlab.corruptions.registry import ALL, BENCHMARK, HELD_OUT
from robustlab.data.base import Dataset
from robustlab.errors import DataError, SuiteError
from robustlab.models.wrapper import ModelInfo, RobustModel
from robustlab.scorecard import Scorecard
from robustlab.store import ResultStore


class _Prototypes(nn.Module):
    """Nearest-prototype classifier: logits = -20 * mean squared distance to 10 prototype images."""

    def __init__(self, protos: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("protos", protos)
        self.fc = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return -20.0 * ((x[:, None] - self.protos[None]) ** 2).flatten(2).mean(2)


def _protos(c: int, hw: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.nn.functional.interpolate(torch.rand(10, c, 4, 4, generator=g), size=(hw, hw), mode="bilinear", align_corners=False)


def _model(c: int = 1, hw: int = 8) -> RobustModel:
    return RobustModel(_Prototypes(_protos(c, hw)), ModelInfo(spec="test", format="test", num_classes=10, input_shape=(c, hw, hw)))


def _data(model: RobustModel, n: int = 24, c: int = 1, hw: int = 8) -> Dataset:
    g = torch.Generator().manual_seed(1)
    y = torch.arange(n) % 10
    x = (_protos(c, hw)[y] + 0.03 * torch.randn(n, c, hw, hw, generator=g)).clamp(0, 1)
    with torch.no_grad():
        assert bool((model(x).argmax(1) == y).all())  # clean accuracy 1
    return Dataset(spec="synthetic", split="test", ids=[f"s/{i}" for i in range(n)], y=y, classes=[str(i) for i in range(10)], x=x)


def _ctx(model: RobustModel, data: Dataset, tmp: Path, *, batch_size: int = 8, store: ResultStore | None = None) -> RunContext:
    return RunContext(
        model=model, data=data, seed=0, batch_size=batch_size, device=torch.device("cpu"), out_dir=tmp,
        store=store or ResultStore(None, {"t": 1}), load_data=lambda *a, **k: data, progress=lambda it, total=None, desc="": it,
    )


def _check(raw: dict, id: str = "corruption"):  # type: ignore[no-untyped-def]
    cls = CHECKS.get("corruption")
    return cls(id=id, params=cls.parse_params(raw))


RAW = {"corruptions": ["gaussian_noise", "contrast", "elastic_transform", "saturate"], "severities": [1, 5], "baseline": "none"}


def test_params_defaults_and_validation() -> None:
    cls = CHECKS.get("corruption")
    p = cls.parse_params({})
    assert list(p.corruptions) == list(BENCHMARK) and list(p.severities) == [1, 2, 3, 4, 5] and p.backend == "fast"
    with pytest.raises(SuiteError, match="did you mean 'gaussian_noise'"):
        cls.parse_params({"corruptions": ["gausian_noise"]})
    with pytest.raises(SuiteError, match="severities"):
        cls.parse_params({"severities": [0, 3]})
    with pytest.raises(SuiteError, match="backend"):
        cls.parse_params({"backend": "gpu"})
    with pytest.raises(SuiteError, match="scorecard"):
        cls.parse_params({"baseline": "/no/such/scorecard.json"})
    with pytest.raises(SuiteError, match="precomputed"):
        cls.parse_params({"precomputed": "/no/such/CIFAR-10-C"})
    with pytest.raises(SuiteError, match="ece_bins"):
        cls.parse_params({"ece_bins": 1})


def test_run_metrics_grid_and_batch_independence(tmp_path: Path) -> None:
    model = _model()
    data = _data(model)
    r1 = _check(RAW).run(_ctx(model, data, tmp_path, batch_size=5))
    r2 = _check(RAW).run(_ctx(model, data, tmp_path, batch_size=16))
    assert r1.metrics == r2.metrics  # per-sample seeding: batch size never changes results
    m = r1.metrics
    assert m["corruption/clean/accuracy"] == 1.0
    for c in RAW["corruptions"]:
        for s in (1, 5):
            assert 0.0 <= m[f"corruption/{c}/s{s}/accuracy"] <= 1.0
            assert f"corruption/{c}/s{s}/accuracy" in r1.intervals
        assert m[f"corruption/{c}/accuracy"] == pytest.approx((m[f"corruption/{c}/s1/accuracy"] + m[f"corruption/{c}/s5/accuracy"]) / 2)
    bench = ["gaussian_noise", "contrast", "elastic_transform"]  # saturate is held out
    assert m["corruption/mean_accuracy"] == pytest.approx(np.mean([m[f"corruption/{c}/accuracy"] for c in bench]))
    assert m["corruption/mean_error"] == pytest.approx(1 - m["corruption/mean_accuracy"])
    assert m["corruption/held_out/mean_accuracy"] == pytest.approx(m["corruption/saturate/accuracy"])
    assert m["corruption/worst/accuracy"] == min(m[f"corruption/{c}/accuracy"] for c in RAW["corruptions"])
    assert m["corruption/mean_accuracy"] < 1.0  # corruptions reach the model
    assert "corruption/mce" not in m and any("No baseline" in n for n in r1.notes)
    grid = r1.series["grid"]
    assert grid.kind == "grid" and grid.x == [1, 5] and grid.rows == RAW["corruptions"]
    assert grid.y["contrast"] == [m["corruption/contrast/s1/accuracy"], m["corruption/contrast/s5/accuracy"]]
    counts = r1.per_sample["corruption_correct_cells"]
    assert len(counts) == len(data) and max(counts) <= 8
    assert sum(counts) == pytest.approx(sum(m[f"corruption/{c}/s{s}/accuracy"] * len(data) for c in RAW["corruptions"] for s in (1, 5)))
    assert "corruption/mean_error" in r1.definitions and "unnormalised" in r1.definitions["corruption/mean_error"]


def test_seed_changes_random_corruptions(tmp_path: Path) -> None:
    model = _model()
    data = _data(model, n=40)
    raw = {"corruptions": ["gaussian_noise"], "severities": [5], "baseline": "none"}
    ctx0 = _ctx(model, data, tmp_path)
    ctx1 = _ctx(model, data, tmp_path)
    ctx1.seed = 1
    a = _check(raw).run(ctx0).metrics["corruption/gaussian_noise/s5/ece"]
    b = _check(raw).run(ctx1).metrics["corruption/gaussian_noise/s5/ece"]
    c = _check(raw).run(_ctx(model, data, tmp_path)).metrics["corruption/gaussian_noise/s5/ece"]
    assert a != b and a == c  # confidences follow the noise: another run seed, other noise


def test_resume_uses_stored_batches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = _model()
    data = _data(model)
    store = ResultStore(tmp_path / "r.sqlite", {"t": 1})
    store.begin(resume=False)
    first = _check(RAW).run(_ctx(model, data, tmp_path, store=store))
    import robustlab.corruptions.engine as engine

    def boom(*a, **k):  # type: ignore[no-untyped-def]
        raise AssertionError("should have been read from the store")

    monkeypatch.setattr(engine, "corrupt", boom)
    again = _check(RAW).run(_ctx(model, data, tmp_path, store=store))
    assert again.metrics == first.metrics


def test_reference_backend_runs(tmp_path: Path) -> None:
    model = _model()
    data = _data(model, n=6)
    raw = {"corruptions": ["contrast", "pixelate"], "severities": [3], "backend": "reference", "baseline": "none"}
    ref = _check(raw).run(_ctx(model, data, tmp_path))
    fast = _check({**raw, "backend": "fast"}).run(_ctx(model, data, tmp_path))
    assert ref.metrics["corruption/contrast/s3/accuracy"] == fast.metrics["corruption/contrast/s3/accuracy"]


def test_ce_formulas() -> None:
    base = Baseline(name="b", errors={"fog": {1: 0.2, 2: 0.4, 3: 0.6}}, clean_error=0.1)
    f = {1: 0.1, 2: 0.2, 3: 0.3}
    assert corruption_error(f, base, "fog") == pytest.approx(0.6 / 1.2)
    assert relative_corruption_error(f, 0.05, base, "fog") == pytest.approx((0.6 - 0.15) / (1.2 - 0.3))
    assert corruption_error({1: 0.1, 4: 0.5}, base, "fog") == pytest.approx(0.1 / 0.2)  # common severities only
    assert corruption_error(f, base, "snow") is None
    alex = alexnet_baseline()
    assert len(alex.mean_errors) == 15 and alex.mean_errors["gaussian_noise"] == pytest.approx(0.886428)
    same = {s: alex.mean_errors["fog"] for s in range(1, 6)}
    assert corruption_error(same, alex, "fog") == pytest.approx(1.0)
    assert corruption_error({1: 0.5, 2: 0.5}, alex, "fog") is None  # published means need all five severities
    assert relative_corruption_error(same, alex.clean_error, alex, "fog") == pytest.approx(1.0)  # type: ignore[arg-type]


def test_baseline_scorecard_gives_ce_of_one_against_itself(tmp_path: Path) -> None:
    model = _model()
    data = _data(model)
    res = _check(RAW).run(_ctx(model, data, tmp_path))
    path = tmp_path / "base.json"
    Scorecard(tool={}, model={"spec": "base-model", "num_classes": 10}, data={}, suite={}, environment={}, run={}, checks=[res]).write(path)
    base = baseline_from_scorecard(path)
    assert base.name == "base-model" and base.clean_error == 0.0 and set(base.errors) == set(RAW["corruptions"])
    res2 = _check({**RAW, "baseline": str(path)}).run(_ctx(model, data, tmp_path))
    for c in RAW["corruptions"]:
        if res.metrics[f"corruption/{c}/accuracy"] < 1.0:
            assert res2.metrics[f"corruption/{c}/ce"] == pytest.approx(1.0)
            assert res2.metrics[f"corruption/{c}/relative_ce"] == pytest.approx(1.0)
    assert "corruption/mce" not in res2.metrics  # only 3 of the 15 benchmark corruptions
    assert res2.metrics["corruption/mce_partial"] == pytest.approx(1.0)
    assert any("mce_partial" in n for n in res2.notes)


def test_mce_over_fewer_than_five_severities_is_partial(tmp_path: Path) -> None:
    """All 15 benchmark corruptions at severity 3 only, against a baseline scorecard of the same kind: the mean of the
    one-severity CEs is not the published mCE (a sum over severities 1..5), so it must not take the corruption/mce key."""
    model = _model()
    data = _data(model, n=6)
    raw = {"corruptions": list(BENCHMARK), "severities": [3], "baseline": "none"}
    base_res = _check(raw).run(_ctx(model, data, tmp_path))
    path = tmp_path / "base.json"
    Scorecard(tool={}, model={"spec": "base-model", "num_classes": 10}, data={}, suite={}, environment={}, run={}, checks=[base_res]).write(path)
    res = _check({**raw, "baseline": str(path)}).run(_ctx(model, data, tmp_path))
    assert "corruption/mce" not in res.metrics and "corruption/relative_mce" not in res.metrics
    assert "corruption/mce_partial" in res.metrics
    assert any("severities [3] only" in n for n in res.notes) and any("not all at five severities" in n for n in res.notes)


def test_alexnet_baseline_for_1000_classes(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 1000))
    model = RobustModel(net, ModelInfo(spec="t1000", format="test", num_classes=1000, input_shape=(3, 32, 32)))
    x = torch.rand(6, 3, 32, 32)
    data = Dataset(spec="s", split="test", ids=[str(i) for i in range(6)], y=torch.arange(6), classes=[str(i) for i in range(1000)], x=x)
    res = _check({"corruptions": ["fog", "contrast"], "severities": [1, 2, 3, 4, 5]}).run(_ctx(model, data, tmp_path, batch_size=6))
    m = res.metrics
    err_fog = 1 - m["corruption/fog/accuracy"]
    assert m["corruption/fog/ce"] == pytest.approx(err_fog / 0.819324)
    assert m["corruption/mce_partial"] == pytest.approx((m["corruption/fog/ce"] + m["corruption/contrast/ce"]) / 2)
    assert "alexnet" in res.definitions["corruption/baseline"]


def _write_cifar_c(root: Path, clean: np.ndarray, labels: np.ndarray) -> None:
    root.mkdir()
    n = len(labels)
    np.save(root / "labels.npy", np.tile(labels, 5))
    grey = np.full_like(clean, 128)
    np.save(root / "fog.npy", np.concatenate([clean] + [grey] * 4))
    np.save(root / "snow.npy", np.concatenate([clean] * 5))
    assert n


def test_precomputed_cifar_c(tmp_path: Path) -> None:
    model = _model(c=3, hw=32)
    data = _data(model, n=10, c=3, hw=32)
    clean = (data.x.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)  # type: ignore[union-attr]
    with torch.no_grad():
        labels = model(torch.from_numpy(clean).permute(0, 3, 1, 2).float() / 255).argmax(1).numpy()
    root = tmp_path / "CIFAR-10-C"
    _write_cifar_c(root, clean, labels)
    pre = open_precomputed(root, ["fog"])
    assert pre.layout == "cifar-c" and pre.count("fog", 3) == 10 and pre.ids("fog", 1)[0] == "CIFAR-10-C/0"
    res = _check({"corruptions": ["fog", "snow"], "precomputed": str(root), "baseline": "none"}).run(_ctx(model, data, tmp_path, batch_size=4))
    m = res.metrics
    assert m["corruption/fog/s1/accuracy"] == 1.0 and m["corruption/snow/s5/accuracy"] == 1.0
    with torch.no_grad():
        grey_pred = int(model(torch.full((1, 3, 32, 32), 128 / 255)).argmax())
    assert m["corruption/fog/s3/accuracy"] == pytest.approx(float((labels == grey_pred).mean()))
    assert "corruption_correct_cells" not in res.per_sample
    limited = _check({"corruptions": ["fog"], "severities": [2], "precomputed": str(root), "precomputed_limit": 3, "baseline": "none"}).run(_ctx(model, data, tmp_path))
    assert res.counts["corruption/fog/s2/accuracy"] == 10 and limited.counts["corruption/fog/s2/accuracy"] == 3
    with pytest.raises(DataError, match="frost.npy"):
        open_precomputed(root, ["frost"])


def test_precomputed_imagenet_c_layout(tmp_path: Path) -> None:
    from PIL import Image

    root = tmp_path / "ImageNet-C"
    rng = np.random.default_rng(0)
    for sev in (1, 2):
        for wnid in ("n02", "n01"):
            d = root / "fog" / str(sev) / wnid
            d.mkdir(parents=True)
            for k in range(2):
                Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(d / f"img{k}.png")
    pre = open_precomputed(root, ["fog"])
    assert pre.layout == "imagenet-c" and pre.count("fog", 1) == 4
    assert pre.labels("fog", 2).tolist() == [0, 0, 1, 1]  # sorted class folders: n01 -> 0, n02 -> 1
    x = pre.images("fog", 1, [0, 3])
    assert x.shape == (2, 3, 40, 40) and float(x.max()) <= 1.0
    with pytest.raises(DataError, match="neither"):
        open_precomputed(tmp_path, [])


def test_custom_entry_id_prefixes_keys_and_baseline_reads_them(tmp_path: Path) -> None:
    model = _model()
    data = _data(model, n=12)
    raw = {"corruptions": ["contrast"], "severities": [4], "baseline": "none"}
    res = _check(raw, id="corr_b").run(_ctx(model, data, tmp_path))
    assert "corruption/corr_b/contrast/s4/accuracy" in res.metrics and "corruption/contrast/s4/accuracy" not in res.metrics
    path = tmp_path / "b.json"
    Scorecard(tool={}, model={"spec": "m"}, data={}, suite={}, environment={}, run={}, checks=[res]).write(path)
    assert baseline_from_scorecard(path).errors == {"contrast": {4: pytest.approx(1 - res.metrics["corruption/corr_b/contrast/s4/accuracy"])}}


def test_group_names_expand() -> None:
    cls = CHECKS.get("corruption")
    assert cls.parse_params({"corruptions": ["all"]}).names() == list(ALL)
    assert cls.parse_params({"corruptions": ["held_out", "fog"]}).names() == list(HELD_OUT) + ["fog"]
    with pytest.raises(SuiteError, match="twice"):
        cls.parse_params({"corruptions": ["benchmark", "fog"]})
