"""Hostile or mistaken inputs to `robustlab defend` and `robustlab compress`: each is a one-line usage
error (exit 2) that says what to do, never a crash (exit 4), a silently wrong number or a lost file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from robustlab.cli import main
from robustlab.compress.methods import CompressionSpec
from robustlab.data import load_dataset
from robustlab.errors import DataError, ModelLoadError, RobustlabError
from robustlab.models import LoadOptions, load_model
from robustlab.pipelines.compress import CompressConfig, compress

FAST = ["--model", "zoo:digits-cnn", "--data", "digits", "--method", "fast-at", "--epochs", "1", "--train-limit", "60", "--val-limit", "20", "--no-mlflow", "-q"]


def _cli(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.output


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _train_npz(path: Path, *, label_shift: int = 0, n: int = 60) -> Path:
    train = load_dataset("digits", split="train")
    np.savez(path, x=train.images(slice(0, n)).numpy(), y=train.y[:n].numpy() + label_shift)
    return path


# -- compress ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["prune-unstructured:0.5", "qat"])
def test_finetuning_on_labels_outside_the_model_classes_is_a_usage_error(method: str, tmp_path: Path) -> None:
    """Before: exit 4, 'internal error: IndexError: Target 22 is out of bounds.' from the cross-entropy."""
    data = _train_npz(tmp_path / "cal.npz", label_shift=20)
    code, text = _cli("compress", "--model", "zoo:digits-cnn", "--method", method, "--epochs", "1", "--calibration-data", f"npz:{data}",
                      "--out", str(tmp_path / "v.safetensors"))
    assert code == 2 and "outside the model's 10 classes" in text and len(text.strip().splitlines()) == 1, text
    assert not (tmp_path / "v.safetensors").exists()


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hostile") / "p30.safetensors"
    return compress(CompressConfig("zoo:digits-cnn", LoadOptions(), CompressionSpec.parse("prune-unstructured:0.3"), out)).path


def _edit(src: Path, dst: Path, change: dict[str, object], drop: tuple[str, ...] = ()) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
        sd = {k: f.get_tensor(k) for k in f.keys()}
    info = json.loads(meta["robustlab"])
    rec = {**info["compression"], **change}
    for k in drop:
        rec.pop(k, None)
    info["compression"] = rec
    save_file(sd, str(dst), metadata={**meta, "robustlab": json.dumps(info)})
    return dst


@pytest.mark.parametrize("change, says", [
    ({"sparsity": "0.3"}, "sparsity '0.3', not a number"),
    ({"measured_sparsity": "lots"}, "measured_sparsity"),
    ({"base_sha256": "not-hex"}, "base_sha256 'not-hex', not 64 hex digits"),
    ({"base_sha256": 12345}, "base_sha256 12345"),
    ({"base_spec": ["zoo:digits-cnn"]}, "base_spec"),
    ({"calibration": "none"}, "calibration 'none', not a mapping"),
    ({"calibration": {"spec": "digits", "n": "many"}}, "calibration n 'many'"),
    ({"base_compression": "x"}, "base_compression 'x', not a mapping"),
    ({"base_compression": {"method": "prune-unstructured", "sparsity": "0.1"}}, "'base_compression' of 'compression' record"),
    ({"torch": 2}, "torch 2, not a string"),
])
def test_a_compression_record_with_wrong_types_is_refused(change: dict[str, object], says: str, pruned: Path, tmp_path: Path) -> None:
    """Before: each loaded (exit 0) and its record went into the scorecard as written: a sparsity stored
    as a string, a base_sha256 of the wrong type that turned the base-model check into a warning."""
    bad = _edit(pruned, tmp_path / "bad.safetensors", change)
    with pytest.raises(ModelLoadError, match=says) as err:
        load_model(str(bad))
    assert "edited or damaged" in str(err.value)


def test_evaluate_variants_refuses_a_mistyped_base_sha256_instead_of_skipping_the_base_check(pruned: Path, tmp_path: Path) -> None:
    """Before: a base_sha256 that is not a string read as 'the variant records no base sha256' (a warning)."""
    from robustlab.pipelines.variants import variant_record

    bad = _edit(pruned, tmp_path / "bad.safetensors", {"base_sha256": 12345})
    with pytest.raises(RobustlabError, match="base_sha256"):
        variant_record(bad)


def test_honest_records_and_unknown_keys_still_load(pruned: Path, tmp_path: Path) -> None:
    assert load_model(str(pruned)).info.extra["compression"]["sparsity"] == 0.3
    later = _edit(pruned, tmp_path / "later.safetensors", {"added_by_a_later_version": {"x": 1}}, drop=("base_sha256", "measured_sparsity"))
    assert load_model(str(later)).info.extra["compression"]["method"] == "prune-unstructured"


# -- defend ---------------------------------------------------------------------------------------
def test_defend_does_not_overwrite_the_input_model_named_with_a_quoted_tilde(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Before: `--model '~/m.safetensors' --out $HOME/m.safetensors` trained and replaced the input model (exit 0)."""
    from robustlab.models.save import save_model, unwrap

    monkeypatch.setenv("HOME", str(tmp_path))
    src = tmp_path / "m.safetensors"
    m = load_model("zoo:digits-cnn", device="cpu")
    save_model(unwrap(m), src, architecture="zoo-arch:digits-cnn", metadata={"num_classes": 10, "input_shape": (1, 8, 8), "bounds": (0.0, 1.0), "dataset": "digits"})
    before = _sha(src)
    args = [a for a in FAST]
    args[args.index("zoo:digits-cnn")] = "~/m.safetensors"
    code, text = _cli("defend", *args, "--out", str(src))
    assert code == 2 and "is the input model" in text, text
    assert _sha(src) == before


def test_an_lr_beyond_float_range_is_a_usage_error(tmp_path: Path) -> None:
    """Before: exit 4, 'RuntimeError: value cannot be converted to type float without overflow' in the optimiser step."""
    code, text = _cli("defend", *FAST, "--lr", "1e300", "--out", str(tmp_path / "o.safetensors"))
    assert code == 2 and "lr must be at most" in text and len(text.strip().splitlines()) == 1, text


def test_a_diverged_run_says_lower_the_lr_not_fix_the_model(tmp_path: Path) -> None:
    """An update that overflows the weights on an epoch's last step (the loss of that step was still
    finite). Before: validation then blamed the model ('the model produced NaN or infinite logits ...;
    make the model's outputs finite', or NaN accuracies), never the learning rate."""
    import torch

    from robustlab.defenses.base import DefenseMethod, LossOutput
    from robustlab.defenses.trainer import TrainConfig, train
    from robustlab.runner import prepare_data

    class Overflow(DefenseMethod):
        name = "overflow"

        def loss(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, seeds: object, bounds: tuple[float, float]) -> LossOutput:
            logits = model(x)
            w = next(model.net.parameters()).flatten()[0]  # type: ignore[union-attr]
            return LossOutput(logits.sum() * 0 + w * 3e38, logits.detach(), {})  # finite loss, gradient 3e38

    model = load_model("zoo:digits-cnn", device="cpu")
    train_data = prepare_data(model, load_dataset("digits", split="train").limit(32))
    val_data = prepare_data(model, load_dataset("digits", split="val").limit(16))
    cfg = TrainConfig(epochs=1, batch_size=64, lr=100.0, schedule="constant", momentum=0.0, weight_decay=0.0)
    with pytest.raises(RobustlabError, match="training diverged at epoch 1: the weights of .* lower --lr") as err:
        train(model, Overflow(), train_data, val_data, cfg, ckpt_dir=tmp_path / "ck")
    assert "outputs finite" not in str(err.value)


def test_resume_and_overwrite_together_are_refused_and_delete_nothing(tmp_path: Path) -> None:
    """Before: --overwrite won silently: the checkpoints --resume was asked to continue were deleted (exit 0)."""
    out = tmp_path / "r.safetensors"
    ck = tmp_path / "r.safetensors.ckpt"
    ck.mkdir()
    (ck / "epoch-1.pt").write_bytes(b"earlier run")
    code, text = _cli("defend", *FAST, "--out", str(out), "--resume", "--overwrite")
    assert code == 2 and "--resume" in text and "--overwrite" in text and len(text.strip().splitlines()) == 1, text
    assert (ck / "epoch-1.pt").read_bytes() == b"earlier run"


def test_overwrite_removes_best_checkpoint_and_history_it_wrote(tmp_path: Path) -> None:
    """Before: best.pt and history.json stayed, and the run warned that the folder 'holds files defend did not write'."""
    from robustlab.pipelines.defend import DefendConfig, _remove_earlier_run

    out = tmp_path / "w.safetensors"
    ck = tmp_path / "w.safetensors.ckpt"
    ck.mkdir()
    for name in ("epoch-1.pt", "epoch-2.pt", "best.pt", "history.json"):
        (ck / name).write_bytes(b"x")
    _remove_earlier_run(DefendConfig(model_spec="zoo:digits-cnn", load=LoadOptions(), method="fast-at", out=out, overwrite=True))
    assert not ck.exists()


def test_a_refused_resume_names_the_setting_that_differs(tmp_path: Path) -> None:
    """Before: 'cannot resume from ...: config differ from the interrupted run', naming no option."""
    out = str(tmp_path / "s.safetensors")
    code, text = _cli("defend", *FAST, "--out", out)
    assert code == 0, text
    code, text = _cli("defend", *FAST, "--out", out, "--resume", "--lr", "0.05")
    assert code == 2 and "config.lr None -> 0.05" in text, text


def test_npz_without_the_train_split_names_the_arrays_it_needs(tmp_path: Path) -> None:
    """Before: 'needs arrays 'x' and 'y' (or 'x'/'y')', never naming x_train/y_train."""
    np.savez(tmp_path / "t.npz", x_test=np.zeros((4, 8, 8), np.uint8), y_test=np.zeros(4, np.int64))
    with pytest.raises(DataError, match="no train split: it needs arrays 'x_train' and 'y_train'"):
        load_dataset(f"npz:{tmp_path / 't.npz'}", split="train")


@pytest.mark.parametrize("method", ["prune-structured:1e-300", "prune-unstructured:1e-9"])
def test_a_sparsity_that_prunes_nothing_is_refused(method: str, tmp_path: Path) -> None:
    """Before: exit 0 and a variant named as pruned that is the base model (every layer rounds its share to zero)."""
    out = tmp_path / "v.safetensors"
    code, text = _cli("compress", "--model", "zoo:digits-cnn", "--method", method, "--out", str(out))
    assert code == 2 and "removes no" in text and "larger sparsity" in text, text
    assert not out.exists()
    assert _cli("compress", "--model", "zoo:digits-cnn", "--method", method.split(":")[0] + ":0.1", "--out", str(out))[0] == 0


def test_a_sparsity_written_with_an_underscore_is_not_read_as_another_number() -> None:
    """Before: 'prune-structured:0_5' was read by float() as 5 and refused with 'got 5'."""
    with pytest.raises(Exception, match=r"'prune-structured:0_5' must be a number in \(0, 1\)"):
        CompressionSpec.parse("prune-structured:0_5")
    assert CompressionSpec.parse("prune-structured:.5").sparsity == 0.5
    assert CompressionSpec.parse("prune-unstructured:5e-1").sparsity == 0.5
