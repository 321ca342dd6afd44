"""defend keeps what it did not write and what it cannot redo: --overwrite deletes only its own
checkpoints and evaluation results, and only after the new run's inputs load; --out may not be the
input model; a run whose model file was written resumes its after-evaluation; refusals come before
any evaluation; the written model names a data set, never the training files; TRADES' random start
scales with the input range like every other budget."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from robustlab.cli import main

SUITES = Path(__file__).parent / "suites"
FAST = ["--model", "zoo:digits-cnn", "--data", "digits", "--method", "fast-at", "--epochs", "1", "--train-limit", "60", "--val-limit", "20", "--no-mlflow"]


def _defend(*args: str) -> object:
    import sys
    from unittest import mock

    argv = ["robustlab", "defend", *FAST, *args]
    with mock.patch.object(sys, "argv", argv):  # the command recorded in the model's header, as typed
        return CliRunner().invoke(main, argv[1:])


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_overwrite_keeps_the_files_of_an_eval_out_folder_defend_did_not_write(tmp_path: Path) -> None:
    """Before: --overwrite --eval-out precious deleted precious/ and everything in it."""
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("x")
    (precious / "before").mkdir()
    (precious / "before" / "old.json").write_text("{}")
    r = _defend("--out", str(tmp_path / "g.safetensors"), "--overwrite", "--eval-out", str(precious))
    assert r.exit_code == 0, r.output
    assert (precious / "thesis.txt").read_text() == "x"
    assert not (precious / "before").exists()  # what an earlier defend run wrote there goes


def test_overwrite_with_bad_inputs_deletes_nothing(tmp_path: Path) -> None:
    """Before: the previous run's checkpoints were deleted, then the missing data file was reported."""
    out = tmp_path / "a.safetensors"
    ck = tmp_path / "a.safetensors.ckpt"
    ck.mkdir()
    (ck / "epoch-0001.pt").write_bytes(b"earlier run")
    r = CliRunner().invoke(main, ["defend", "--model", "zoo:digits-cnn", "--data", f"npz:{tmp_path / 'typo.npz'}", "--method", "fast-at", "--epochs", "1",
                                  "--out", str(out), "--overwrite", "--no-mlflow"])
    assert r.exit_code == 2, r.output
    assert (ck / "epoch-0001.pt").read_bytes() == b"earlier run"


def test_out_may_not_be_the_input_model(tmp_path: Path) -> None:
    from robustlab.models import load_model
    from robustlab.models.save import save_model, unwrap

    src = tmp_path / "inplace.safetensors"
    m = load_model("zoo:digits-cnn", device="cpu")
    save_model(unwrap(m), src, architecture="zoo-arch:digits-cnn", metadata={"num_classes": 10, "input_shape": (1, 8, 8), "bounds": (0.0, 1.0), "dataset": "digits"})
    before = _sha(src)
    r = CliRunner().invoke(main, ["defend", "--model", str(src), "--out", str(src), "--data", "digits", "--method", "fast-at", "--epochs", "1", "--no-mlflow"])
    assert r.exit_code == 2 and "is the input model" in r.output, r.output
    assert _sha(src) == before


def test_existing_checkpoints_are_refused_before_the_before_evaluation(tmp_path: Path) -> None:
    out = tmp_path / "c.safetensors"
    ck = tmp_path / "c.safetensors.ckpt"
    ck.mkdir()
    (ck / "epoch-0001.pt").write_bytes(b"earlier run")
    r = _defend("--out", str(out), "--evaluate", str(SUITES / "defend_pgd.yaml"))
    assert r.exit_code == 2 and "--resume" in r.output, r.output
    assert not (tmp_path / "c.safetensors.eval").exists()  # nothing was evaluated first


def test_no_training_images_left_after_the_validation_hold_out_is_a_usage_error(tmp_path: Path) -> None:
    """Before: exit 4, 'RuntimeError: min(): Expected reduction dim'."""
    from sklearn.datasets import load_digits

    d = load_digits()
    np.savez(tmp_path / "dig.npz", x=(d.images[:50] / 16.0).astype(np.float32)[:, None], y=d.target[:50])
    r = CliRunner().invoke(main, ["defend", "--model", "zoo:digits-cnn", "--data", f"npz:{tmp_path / 'dig.npz'}", "--method", "gaussian", "--epochs", "1",
                                  "--train-limit", "1", "--out", str(tmp_path / "w.safetensors"), "--no-mlflow"])
    assert r.exit_code == 2 and "no training images are left" in r.output, r.output


def test_the_written_model_names_no_training_file_as_its_data_set(tmp_path: Path) -> None:
    """Before: "dataset": "npz:dig.npz", so `evaluate --model OUT` silently evaluated on the training images."""
    from safetensors import safe_open
    from sklearn.datasets import load_digits

    from robustlab.models import load_model
    from robustlab.models.save import save_model, unwrap

    d = load_digits()
    np.savez(tmp_path / "dig.npz", x=(d.images[:200] / 16.0).astype(np.float32)[:, None], y=d.target[:200])
    plain = tmp_path / "plain.safetensors"
    save_model(unwrap(load_model("zoo:digits-cnn", device="cpu")), plain, architecture="zoo-arch:digits-cnn", metadata={"num_classes": 10, "input_shape": (1, 8, 8), "bounds": (0.0, 1.0)})
    out = tmp_path / "p.safetensors"
    r = CliRunner().invoke(main, ["defend", "--model", str(plain), "--data", f"npz:{tmp_path / 'dig.npz'}", "--method", "fast-at", "--eps", "0.1", "--epochs", "1",
                                  "--out", str(out), "--no-mlflow"])
    assert r.exit_code == 0, r.output
    with safe_open(str(out), "pt") as f:
        meta = json.loads(f.metadata()["robustlab"])
    assert "dataset" not in meta, meta.get("dataset")
    assert meta["defense"]["data"]["spec"].startswith("npz:")  # the training data stays recorded as provenance


@pytest.mark.timeout(600)
def test_an_interrupted_after_evaluation_resumes(tmp_path: Path) -> None:
    """Before: rerunning with --resume rewrote the model file (its header holds the command and epoch
    times), so the after-evaluation refused: 'model_sha256 changed since the interrupted run'."""
    out = tmp_path / "f.safetensors"
    suite = ["--evaluate", str(SUITES / "defend_pgd.yaml"), "--limit", "40"]
    r = _defend("--out", str(out), *suite)
    assert r.exit_code == 0, r.output
    sha = _sha(out)
    shutil.rmtree(tmp_path / "f.safetensors.eval" / "after")  # as if interrupted before the after-evaluation finished...
    (tmp_path / "f.safetensors.eval" / "after").mkdir()
    r = _defend("--out", str(out), *suite, "--resume")
    assert r.exit_code == 0, r.output
    assert _sha(out) == sha
    # ... and the case the probe hit: the after-evaluation had started on the file
    r = _defend("--out", str(out), *suite, "--resume")
    assert r.exit_code == 0, r.output
    assert _sha(out) == sha


class _Scaled(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x / 255.0)


def test_trades_random_start_scales_with_the_input_range() -> None:
    """The same function on 0..255 inputs with the same budget (scaled) gives the same TRADES loss.
    Before: init_std was absolute (0.001 gray levels on 0..255), a different start and loss."""
    from robustlab.data import load_dataset
    from robustlab.defenses.trades import TRADES, TRADESParams
    from robustlab.models import load_model

    net = load_model("zoo:digits-cnn", device="cpu").net.eval()
    d = load_dataset("digits", split="train").limit(32)
    x, y = d.images(slice(0, 32)), d.y[:32]
    seeds = list(range(32))
    a = TRADES(TRADESParams(eps=0.1, init_std=0.05)).loss(net, x, y, seeds=seeds, bounds=(0.0, 1.0))
    b = TRADES(TRADESParams(eps=25.5, init_std=0.05)).loss(_Scaled(net), x * 255.0, y, seeds=seeds, bounds=(0.0, 255.0))
    assert float(a.loss) == pytest.approx(float(b.loss), rel=1e-4, abs=1e-5)


def test_select_best_without_validation_images_is_refused(tmp_path: Path) -> None:
    """Before: it silently wrote the last epoch."""
    from sklearn.datasets import load_digits

    d = load_digits()
    np.savez(tmp_path / "dig.npz", x=(d.images[:100] / 16.0).astype(np.float32)[:, None], y=d.target[:100])
    r = CliRunner().invoke(main, ["defend", "--model", "zoo:digits-cnn", "--data", f"npz:{tmp_path / 'dig.npz'}", "--method", "fast-at", "--epochs", "1",
                                  "--val-fraction", "0", "--select", "best", "--out", str(tmp_path / "b.safetensors"), "--no-mlflow"])
    assert r.exit_code == 2 and "--select best" in r.output and "--val-fraction" in r.output, r.output


@pytest.mark.parametrize("args, flag", [(["--method", "pgd-at", "--step-ratio", "0"], "--step-ratio"), (["--method", "trades", "--init-std", "-1"], "--init-std"),
                                         (["--method", "augmix", "--augmix-width", "0"], "--augmix-width")])
def test_bad_method_options_are_named_by_their_flag(tmp_path: Path, args: list[str], flag: str) -> None:
    """Before: 'rel_stepsize must be ...', 'width ...': names the user never typed."""
    r = CliRunner().invoke(main, ["defend", "--model", "zoo:digits-cnn", "--data", "digits", *args, "--out", str(tmp_path / "x.safetensors"), "--no-mlflow"])
    assert r.exit_code == 2, r.output
    line = [ln for ln in r.output.splitlines() if ln.startswith("error:")][0]
    assert line.startswith(f"error: {flag} "), line
