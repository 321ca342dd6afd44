"""``robustlab defend``: each method improves the robustness figure it targets on zoo:digits-cnn
(small budgets), resume reproduces an uninterrupted run exactly, and the CLI writes a model that
loads without --trust-code plus before/after scorecards and a comparison."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from robustlab.pipelines.defend import DefendConfig, DefendResult, run_defense
from robustlab.defenses.trainer import TrainConfig
from robustlab.models import LoadOptions, load_model

SUITES = Path(__file__).resolve().parent / "suites"
EPS = 0.1  # the digits Linf budget (robustlab.attacks.scoring.STANDARD_BUDGETS)


def pgd_robust_accuracy(model: torch.nn.Module, data: object, *, steps: int = 10) -> float:
    """Robust accuracy (clean errors count as non-robust) under 10-step Linf PGD at eps 0.1."""
    from robustlab.attacks.pgd import PGD
    from robustlab.seeding import sample_seeds

    x, y = data.images(), data.y  # type: ignore[attr-defined]
    xa = PGD(norm="linf", steps=steps, rel_stepsize=2.5 / steps).perturb(model, x, y, EPS, seeds=sample_seeds(0, "test", data.ids))  # type: ignore[attr-defined]
    with torch.no_grad():
        return float((model(xa).argmax(1) == y).float().mean())


@pytest.fixture(scope="module")
def undefended_robust(digits_model: torch.nn.Module, digits_data: object) -> float:
    return pgd_robust_accuracy(digits_model, digits_data)


def _defend(tmp_path: Path, method: str, *, epochs: int, params: dict | None = None, suite: str | None = None, train_limit: int | None = None,
            **train: object) -> DefendResult:
    cfg = DefendConfig(model_spec="zoo:digits-cnn", load=LoadOptions(device="cpu"), method=method, method_params=params or {}, data_spec="digits",
                       train=TrainConfig(**{"epochs": epochs, "batch_size": 64, "val_limit": 48, "val_pgd_steps": 5, **train}), out=tmp_path / f"{method}.safetensors",  # type: ignore[arg-type]
                       suite=suite, train_limit=train_limit, quiet=True)
    return run_defense(cfg)


def _loaded(res: DefendResult) -> torch.nn.Module:
    return load_model(str(res.model_path), device="cpu")  # no trust flag needed


def test_pgd_at_raises_robust_accuracy(tmp_path: Path, digits_data: object, undefended_robust: float) -> None:
    res = _defend(tmp_path, "pgd-at", epochs=2, params={"steps": 5, "rel_stepsize": 0.5}, train_limit=768)
    model = _loaded(res)
    robust = pgd_robust_accuracy(model, digits_data)
    clean = float((model(digits_data.images()).argmax(1) == digits_data.y).float().mean())  # type: ignore[attr-defined]
    assert robust > undefended_robust + 0.15, (undefended_robust, robust)
    assert clean > 0.9
    assert res.training.history[0].val_robust_name == "pgd"


def test_fast_at_raises_robust_accuracy(tmp_path: Path, digits_data: object, undefended_robust: float) -> None:
    res = _defend(tmp_path, "fast-at", epochs=2, schedule="cyclic", train_limit=768)
    robust = pgd_robust_accuracy(_loaded(res), digits_data)
    assert robust > undefended_robust + 0.15, (undefended_robust, robust)


def test_trades_raises_robust_accuracy(tmp_path: Path, digits_data: object, undefended_robust: float) -> None:
    res = _defend(tmp_path, "trades", epochs=2, params={"steps": 5, "rel_stepsize": 0.4}, optimizer="adam", lr=1e-3, train_limit=768)
    model = _loaded(res)
    robust = pgd_robust_accuracy(model, digits_data)
    clean = float((model(digits_data.images()).argmax(1) == digits_data.y).float().mean())  # type: ignore[attr-defined]
    assert robust > undefended_robust + 0.15, (undefended_robust, robust)
    assert clean > 0.9
    assert set(res.training.history[-1].extra) == {"ce", "kl"}


def test_augmix_raises_mean_corruption_accuracy(tmp_path: Path) -> None:
    # the whole training split: with a seeded random 768 of it the gain was +0.030, too close to the bar to test
    res = _defend(tmp_path, "augmix", epochs=2, suite=str(SUITES / "defend_corruption.yaml"))
    assert res.before is not None and res.after is not None
    before, after = res.before.metrics()["corruption/mean_accuracy"], res.after.metrics()["corruption/mean_accuracy"]
    assert after > before + 0.03, (before, after)
    assert res.after.metrics()["corruption/clean/accuracy"] > 0.9
    assert any(r["metric"] == "corruption/mean_accuracy" for r in res.comparison)


def test_gaussian_raises_certified_accuracy(tmp_path: Path) -> None:
    res = _defend(tmp_path, "gaussian", epochs=2, train_limit=768, params={"sigma": 0.25}, suite=str(SUITES / "defend_certify.yaml"))
    assert res.before is not None and res.after is not None
    key = "certify/sigma_0.25/certified_accuracy_at_r_0.25"
    before, after = res.before.metrics()[key], res.after.metrics()[key]
    assert after > before + 0.1, (before, after)
    rows = {r["metric"]: r for r in res.comparison}
    assert rows[key]["delta"] == pytest.approx(after - before)


def test_resume_gives_the_uninterrupted_weights(tmp_path: Path) -> None:
    kw = dict(method="fast-at", method_params={}, data_spec="digits", train_limit=256, quiet=True)
    cfg = TrainConfig(epochs=2, batch_size=64, val_limit=32, schedule="cyclic")
    full = run_defense(DefendConfig(model_spec="zoo:digits-cnn", load=LoadOptions(device="cpu"), train=cfg, out=tmp_path / "a" / "m.safetensors", **kw))  # type: ignore[arg-type]
    # the interrupted run: trained through epoch 1 only (what a crash during epoch 2 leaves behind)
    out_b = tmp_path / "b" / "m.safetensors"
    run_defense(DefendConfig(model_spec="zoo:digits-cnn", load=LoadOptions(device="cpu"), train=cfg, out=out_b, **kw))  # type: ignore[arg-type]
    ckpt = out_b.with_name(out_b.name + ".ckpt")
    (ckpt / "epoch-2.pt").unlink()
    out_b.unlink()
    with pytest.raises(Exception, match="--resume"):
        run_defense(DefendConfig(model_spec="zoo:digits-cnn", load=LoadOptions(device="cpu"), train=cfg, out=out_b, **kw))  # type: ignore[arg-type]
    resumed = run_defense(DefendConfig(model_spec="zoo:digits-cnn", load=LoadOptions(device="cpu"), train=cfg, out=out_b, resume=True, **kw))  # type: ignore[arg-type]
    assert resumed.training.resumed_from == 1
    assert [h.loss for h in resumed.training.history] == [h.loss for h in full.training.history]
    from safetensors.torch import load_file

    a, b = load_file(str(full.model_path)), load_file(str(out_b))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # checkpoints hold only plain data: they load with weights_only=True
    ck = torch.load(ckpt / "epoch-2.pt", weights_only=True)
    assert ck["epoch"] == 2 and "optimizer" in ck
    # a changed setting refuses to resume
    with pytest.raises(Exception, match="differ"):
        run_defense(DefendConfig(model_spec="zoo:digits-cnn", load=LoadOptions(device="cpu"), train=TrainConfig(epochs=2, batch_size=32, val_limit=32, schedule="cyclic"),
                                 out=out_b, resume=True, **kw))  # type: ignore[arg-type]
    # so does a changed validation size: it decides the `--select best` epoch and the recorded validation history
    with pytest.raises(Exception, match="differ"):
        run_defense(DefendConfig(model_spec="zoo:digits-cnn", load=LoadOptions(device="cpu"), train=TrainConfig(epochs=2, batch_size=64, val_limit=16, schedule="cyclic"),
                                 out=out_b, resume=True, **kw))  # type: ignore[arg-type]


def test_cli_defend_with_evaluate(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from robustlab.cli import main

    out = tmp_path / "robust.safetensors"
    r = CliRunner().invoke(main, ["defend", "--model", "zoo:digits-cnn", "--data", "digits", "--method", "fast-at", "--epochs", "1",
                                  "--train-limit", "300", "--val-limit", "50", "--limit", "60", "--out", str(out),
                                  "--evaluate", str(SUITES / "defend_pgd.yaml")])
    assert r.exit_code == 0, r.output
    assert "before/after" in r.output and "adversarial/pgd_linf/robust_accuracy" in r.output
    assert "epoch 1/1: loss" in r.output  # CliRunner mixes stderr in
    ev = out.with_name(out.name + ".eval")
    before = json.loads((ev / "before" / "scorecard.json").read_text())
    after = json.loads((ev / "after" / "scorecard.json").read_text())
    assert before["run"]["seed"] == after["run"]["seed"] and before["data"]["ids_sha256"] == after["data"]["ids_sha256"]
    cmp = json.loads((ev / "comparison.json").read_text())
    assert any(row["metric"] == "adversarial/pgd_linf/robust_accuracy" for row in cmp["headline"])
    model = load_model(str(out), device="cpu")
    assert model.bounds == (0.0, 1.0) and model.num_classes == 10 and model.input_shape == (1, 8, 8) and not model.info.trusted
    from safetensors import safe_open

    with safe_open(str(out), "pt") as f:
        meta = json.loads(f.metadata()["robustlab"])
    assert meta["defense"]["method"] == "fast-at" and meta["defense"]["params"]["eps"] == pytest.approx(0.1)
    assert meta["defense"]["base_model"]["spec"] == "zoo:digits-cnn" and len(meta["defense"]["history"]) == 1
    # rerunning into the same folder without --resume or --overwrite is refused with a hint
    r2 = CliRunner().invoke(main, ["defend", "--model", "zoo:digits-cnn", "--data", "digits", "--method", "fast-at", "--epochs", "1", "--out", str(out)])
    assert r2.exit_code == 2 and "--resume" in r2.output


def test_cli_defend_reads_the_budget_from_dataset_for_an_arch_model(tmp_path: Path) -> None:
    """A bare state dict loaded with --arch names no data set; `--dataset digits` names it (as in evaluate) and
    sets the default budget. Before, defend accepted --dataset and ignored it: "no standard adversarial budget is known"."""
    from click.testing import CliRunner
    from safetensors.torch import save_file

    from robustlab.cli import main

    weights = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in load_model("zoo:digits-cnn", device="cpu").net.state_dict().items()}, str(weights))
    out = tmp_path / "robust.safetensors"
    args = ["defend", "--model", str(weights), "--arch", "zoo-arch:digits-cnn", "--data", "digits", "--method", "pgd-at", "--epochs", "1",
            "--train-limit", "64", "--val-limit", "16", "--out", str(out)]
    r = CliRunner().invoke(main, [*args, "--dataset", "digits"])
    assert r.exit_code == 0, r.output
    from safetensors import safe_open

    with safe_open(str(out), "pt") as f:
        meta = json.loads(f.metadata()["robustlab"])
    assert meta["defense"]["params"]["eps"] == pytest.approx(0.1) and meta["dataset"] == "digits"
    r = CliRunner().invoke(main, [*args, "--dataset", "cifar10", "--overwrite"])  # named twice, differently: refused
    assert r.exit_code == 2 and "named" in r.output


@pytest.mark.parametrize("args, msg", [
    (["--method", "pgd-at", "--beta", "3"], "--beta applies to trades"),
    (["--method", "gaussian", "--sigma", "-1"], "sigma"),
    (["--method", "augmix", "--augmix-depth", "7"], "depth"),
    (["--method", "pgd-at", "--out", "x.pt"], ".safetensors"),
])
def test_cli_rejects_bad_options(tmp_path: Path, args: list[str], msg: str) -> None:
    from click.testing import CliRunner

    from robustlab.cli import main

    out = ["--out", str(tmp_path / "m.safetensors")] if "--out" not in args else []
    r = CliRunner().invoke(main, ["defend", "--model", "zoo:digits-cnn", "--data", "digits", *out, *args])
    assert r.exit_code == 2 and msg in r.output, r.output


@pytest.mark.slow
@pytest.mark.parametrize("method, train", [
    ("pgd-at", {}),
    ("fast-at", {"schedule": "cyclic"}),
    ("trades", {"optimizer": "adam", "lr": 1e-3}),
])
def test_standard_budgets_full_digits(tmp_path: Path, digits_data: object, undefended_robust: float, method: str, train: dict) -> None:
    """The methods' default hyperparameters (REFERENCES.md) on the whole digits training split."""
    res = _defend(tmp_path, method, epochs=5, **train)
    model = _loaded(res)
    robust = pgd_robust_accuracy(model, digits_data, steps=40)
    clean = float((model(digits_data.images()).argmax(1) == digits_data.y).float().mean())  # type: ignore[attr-defined]
    assert robust > undefended_robust + 0.3, (undefended_robust, robust)
    assert clean > 0.93
