"""A model's outputs are never read as verdicts when they cannot be: NaN or infinite logits at an
adversarial, clean or noisy input stop the run (exit 2) instead of counting as a misclassification;
the network gets its own copy of its input (a model that edits it in place cannot rewrite the data
set); half-precision logits reach every check as float32."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from click.testing import CliRunner

from robustlab.attacks.recheck import finite_logits, recheck
from robustlab.attacks.threat import Norm
from robustlab.cli import main
from robustlab.errors import ModelOutputError
from robustlab.models import load_model
from robustlab.models.wrapper import ModelInfo, RobustModel
from robustlab.smoothing.sampling import count_votes

PLUGINS = str(Path(__file__).parent / "plugins")
sys.path.insert(0, PLUGINS)

import rl_test_models  # noqa: E402


def _cli(tmp_path, *args):
    """``robustlab evaluate`` in this process (tests/plugins is on sys.path for the factories); OUT paths are under tmp_path."""
    args = tuple(str(tmp_path / a) if prev == "--out" else a for prev, a in zip(("",) + args, args))
    r = CliRunner().invoke(main, ["evaluate", "--threads", "1", "--no-mlflow", "--no-report", "--quiet", *args])
    return SimpleNamespace(returncode=r.exit_code, stderr=r.stderr)


def _suite(tmp_path, body):
    p = tmp_path / "suite.yaml"
    p.write_text("name: s\nchecks:\n" + body)
    return str(p)


def _wrap(net):
    return RobustModel(net, ModelInfo(spec="t", format="test", num_classes=10, bounds=(0.0, 1.0)))


def test_recheck_refuses_nan_logits_at_an_adversarial_example():
    """Before: argmax of the NaN row is class 0, so a point labelled 3 counted as fooled."""
    m = _wrap(rl_test_models.nan_off_grid()).eval()
    x = torch.zeros(2, 1, 8, 8)
    xa = x + 0.01  # off the 1/16 grid: NaN logits
    with pytest.raises(ModelOutputError, match="NaN or infinite logits for 2 of 2 adversarial"):
        recheck(m, x, xa, torch.tensor([3, 4]), 0.05, Norm.LINF, (0.0, 1.0))
    rc = recheck(m, x, x, torch.tensor([3, 4]), 0.05, Norm.LINF, (0.0, 1.0))  # on the grid: finite, checked as usual
    assert rc.finite.all()
    assert finite_logits(torch.ones(2, 3), "x").shape == (2, 3)
    with pytest.raises(ModelOutputError, match="1 of 2 clean inputs"):
        finite_logits(torch.tensor([[0.0, float("inf")], [1.0, 2.0]]), "clean inputs")


def test_pgd_check_with_nan_logits_off_the_data_exits_2_and_keeps_the_clean_check(tmp_path):
    """Before: exit 0, pgd_linf 'ok' with a robust accuracy near 0.1 (every NaN point 'fooled')."""
    suite = _suite(tmp_path, "  - check: clean\n  - check: pgd\n    id: pgd_linf\n    params: {norm: linf, steps: 5, epsilons: [0.05]}\n")
    r = _cli(tmp_path, "--model", "factory:rl_test_models:nan_off_grid", "--data", "digits", "--limit", "32", "--suite", suite, "--out", "o")
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert lines[-1].startswith("error:") and "NaN or infinite logits" in lines[-1] and "Traceback" not in r.stderr
    card = json.loads((tmp_path / "o" / "scorecard.json").read_text())
    assert [c["id"] for c in card["checks"]] == ["clean"]  # what was computed is kept


def test_smoothing_votes_refuse_nan_logits_under_noise():
    """Before: every NaN vote went to class 0, a vote the base classifier never cast."""
    m = _wrap(rl_test_models.nan_off_grid()).eval()
    x = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ModelOutputError, match="noisy inputs"):
        count_votes(m, x, [1, 2], num=50, sigma=0.25, num_classes=10, batch_size=32)
    counts = count_votes(_wrap(rl_test_models.tiny()).eval(), x, [1, 2], num=50, sigma=0.25, num_classes=10, batch_size=32)
    assert counts.sum().item() == 100


def test_certify_check_with_nan_logits_under_noise_exits_2(tmp_path):
    """The first noisy batch is finite (the output check at the start of sampling passes), the later ones
    are NaN. Before: exit 0, their votes counted for class 0."""
    suite = _suite(tmp_path, "  - check: certify\n    params: {sigmas: [0.25], n0: 20, n: 100, alpha: 0.001, num_points: 4, radii: [0.0], attack: false}\n")
    r = _cli(tmp_path, "--model", "factory:rl_test_models:nan_off_grid_after_first", "--data", "digits", "--limit", "8", "--suite", suite, "--out", "o")
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1].startswith("error:") and "noisy inputs" in r.stderr


def test_the_network_gets_a_copy_of_its_input():
    """Before: a model that halves its input in place halved the caller's tensor."""
    m = _wrap(rl_test_models.halves_input_in_place()).eval()
    x = torch.rand(4, 1, 8, 8)
    keep = x.clone()
    with torch.no_grad():
        a = m(x)
        b = m(x)
    assert torch.equal(x, keep) and torch.equal(a, b)


def test_in_place_model_does_not_rewrite_the_data_set(tmp_path):
    """Before: the load-time probe halved the stored images, so the clean check saw x / 4 (0.6875 on these 32)."""
    r = _cli(tmp_path, "--model", "factory:rl_test_models:halves_input_in_place", "--data", "digits", "--limit", "32",
             "--suite", str(Path(__file__).parent / "suites" / "clean.yaml"), "--out", "o")
    assert r.returncode == 0, r.stderr[-2000:]
    acc = json.loads((tmp_path / "o" / "scorecard.json").read_text())["checks"][0]["metrics"]["clean/accuracy"]
    from robustlab.data import load_dataset

    d = load_dataset("digits", split="test").limit(32)
    net = load_model("zoo:digits-cnn", device="cpu").net.eval()
    with torch.no_grad():
        want = float((net(d.images(slice(0, 32)) * 0.5).argmax(1) == d.y[:32]).float().mean())
    assert acc == pytest.approx(want)


def test_half_precision_logits_reach_the_attacks_as_float32(tmp_path):
    """Before: PGD failed with 'Index put requires the source and destination dtypes match' (exit 3)."""
    m = _wrap(rl_test_models.half_logits()).eval()
    assert m(torch.rand(2, 1, 8, 8)).dtype == torch.float32
    suite = _suite(tmp_path, "  - check: clean\n  - check: pgd\n    id: pgd_linf\n    params: {norm: linf, steps: 5, epsilons: [0.05]}\n")
    r = _cli(tmp_path, "--model", "factory:rl_test_models:half_logits", "--data", "digits", "--limit", "32", "--suite", suite, "--out", "o")
    assert r.returncode == 0, r.stderr[-2000:]
    card = json.loads((tmp_path / "o" / "scorecard.json").read_text())
    assert [c["status"] for c in card["checks"]] == ["ok", "ok"]



def test_ood_check_accuracy_under_shift_refuses_nan_logits(tmp_path):
    """The OOD check's accuracy on a shifted set (MNIST resized to 8x8: off the digits grid, so NaN logits).
    Before: those NaN rows were counted as wrong predictions, and the check later errored (exit 3)."""
    suite = _suite(tmp_path, "  - check: ood\n    params: {detectors: [msp], near: [samples:fashion-mnist], far: [noise:uniform], shift: [samples:mnist], synthetic_n: 20}\n")
    r = _cli(tmp_path, "--model", "factory:rl_test_models:nan_off_grid", "--data", "digits", "--limit", "16", "--suite", suite, "--out", "o")
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().splitlines()[-1].startswith("error:") and "NaN or infinite logits" in r.stderr
