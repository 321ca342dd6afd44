"""Models that are legitimate but unusual, found by a probe with models not in this repository:
probabilities instead of logits (clean ECE was 0.755 against the model's own 0.017), float64 logits
(PGD crashed) and integer outputs, a model that asserts a fixed batch size (reported as a robustlab
bug, exit 4), and a model with randomness left on (two runs with one seed gave 0.781 and 0.8125)."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from robustlab.cli import main

PLUGINS = str(Path(__file__).parent / "plugins")
sys.path.insert(0, PLUGINS)

CLEAN_PGD = "name: s\nchecks:\n  - check: clean\n  - check: pgd\n    id: pgd_linf\n    params: {norm: linf, steps: 10, epsilons: [0.1]}\n"


def _evaluate(tmp_path: Path, out: str, model: str, suite: str = CLEAN_PGD, *extra: str) -> SimpleNamespace:
    s = tmp_path / "suite.yaml"
    s.write_text(suite)
    r = CliRunner().invoke(main, ["evaluate", "--threads", "1", "--no-mlflow", "--no-report", "--quiet", "--model", f"factory:rl_test_models:{model}",
                                  "--data", "digits", "--limit", "64", "--suite", str(s), "--out", str(tmp_path / out), *extra])
    card = json.loads((tmp_path / out / "scorecard.json").read_text()) if (tmp_path / out / "scorecard.json").is_file() else None
    return SimpleNamespace(code=r.exit_code, out=r.output, card=card)


def _metrics(card: dict) -> dict:
    return {k: v for c in card["checks"] for k, v in c["metrics"].items()}


def test_probabilities_are_read_as_the_model_s_own_confidences(tmp_path):
    ref = _evaluate(tmp_path, "logits", "zoo_digits")
    got = _evaluate(tmp_path, "probs", "probabilities_out")
    assert ref.code == got.code == 0, got.out
    a, b = _metrics(ref.card), _metrics(got.card)
    assert b["clean/accuracy"] == a["clean/accuracy"]
    assert b["clean/ece"] == pytest.approx(a["clean/ece"], abs=1e-4) and b["clean/mean_confidence"] == pytest.approx(a["clean/mean_confidence"], abs=1e-4)
    assert "probabilities" in got.card["model"]["extra"]["outputs"] and "outputs" not in ref.card["model"].get("extra", {})
    audit = {a["name"]: a for c in got.card["checks"] for a in c["audit"]}
    assert audit["softmax_outputs"]["verdict"] == "suspect"  # the gradient masking of a final softmax is still reported


@pytest.mark.parametrize("model, extra", [("probabilities_fp16", ()), ("probabilities_bf16", ()), ("probabilities_out", ("--batch-size", "1"))])
def test_half_precision_probabilities_and_batches_of_one_are_detected(tmp_path, model, extra):
    """Found by a probe: a float16 or bfloat16 softmax (row sums off by 2e-4) and any softmax evaluated with
    --batch-size 1 were taken for logits: exit 0 with clean ECE 0.771 instead of the model's 0.017."""
    suite = "name: s\nchecks:\n  - check: clean\n"
    ref = _evaluate(tmp_path, "logits", "zoo_digits", suite)
    got = _evaluate(tmp_path, "probs", model, suite, *extra)
    assert got.code == 0, got.out
    assert "probabilities" in got.card["model"]["extra"]["outputs"]
    a, b = _metrics(ref.card), _metrics(got.card)
    assert b["clean/accuracy"] == a["clean/accuracy"] and b["clean/ece"] == pytest.approx(a["clean/ece"], abs=0.02)


def test_float64_logits_run_every_check_and_integer_outputs_are_refused(tmp_path):
    ref = _evaluate(tmp_path, "logits", "zoo_digits")
    dbl = _evaluate(tmp_path, "double", "double_out")
    assert dbl.code == 0, dbl.out
    assert _metrics(dbl.card)["adversarial/pgd_linf/robust_accuracy"] == pytest.approx(_metrics(ref.card)["adversarial/pgd_linf/robust_accuracy"], abs=1 / 64)
    ints = _evaluate(tmp_path, "int", "int_out")
    lines = [ln for ln in ints.out.strip().splitlines() if ln.strip()]
    assert ints.code == 2 and lines[-1].startswith("error:") and "int64 values, not floating-point logits" in lines[-1], ints.out


def test_a_model_that_asserts_its_batch_size_is_a_usage_error(tmp_path):
    r = _evaluate(tmp_path, "fixed", "fixed_batch")
    lines = [ln for ln in r.out.strip().splitlines() if ln.strip()]
    assert r.code == 2, r.out
    assert lines[-1].startswith("error:") and "AssertionError: batch 64" in lines[-1] and "any batch size" in lines[-1] and "robustlab bug" not in r.out


def test_a_random_model_gives_the_same_scorecard_for_the_same_seed(tmp_path):
    runs = [_evaluate(tmp_path, f"n{i}", "noisy", CLEAN_PGD, "--seed", str(seed)) for i, seed in enumerate((5, 5, 6))]
    assert all(r.code == 0 for r in runs), runs[0].out
    m = [_metrics(r.card) for r in runs]
    per_sample = [[c["per_sample"] for c in r.card["checks"]] for r in runs]
    assert m[0] == m[1] and per_sample[0] == per_sample[1]
    assert per_sample[0] != per_sample[2]  # the randomness matters: another seed draws other dropout masks


def test_a_forward_without_gradients_names_the_cause(tmp_path):
    """torch's own text ("element 0 of tensors does not require grad") said nothing a user could act on."""
    r = _evaluate(tmp_path, "nograd", "no_grad_forward")
    assert r.code == 3, r.out  # the clean check ran; the attack could not: inconclusive, not a pass
    pgd = next(c for c in r.card["checks"] if c["id"] == "pgd_linf")
    assert pgd["status"] == "error" and "torch.no_grad()" in pgd["reason"] and "black-box" in pgd["reason"]
    assert next(c for c in r.card["checks"] if c["id"] == "clean")["status"] == "ok"


@pytest.mark.parametrize("body, spec, says", [
    ("import sys\ndef build(num_classes=10):\n    sys.exit(0)\n", "build", "exited (SystemExit 0) instead of returning a model"),
    ("import argparse\np = argparse.ArgumentParser()\np.add_argument('--lr', required=True)\nargs = p.parse_args()\ndef build():\n    pass\n", "build",
     "exited (SystemExit 2: "),
    ("raise RuntimeError('CUDA not available')\n", "build", "raised RuntimeError: CUDA not available; fix the module"),
])
def test_a_factory_that_exits_or_fails_at_import_is_a_usage_error(tmp_path, monkeypatch, body, spec, says):
    """Found by a probe: a factory calling sys.exit(0) made robustlab exit 0 with nothing written, a training
    script parsing its own arguments at import printed its usage, and a module raising at import was a
    'robustlab bug' (exit 4)."""
    name = f"rl_fac_{abs(hash(body)) % 10**8}"
    (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.syspath_prepend(str(tmp_path))
    r = CliRunner().invoke(main, ["evaluate", "--no-mlflow", "--no-report", "--quiet", "--model", f"factory:{name}:{spec}", "--num-classes", "10",
                                  "--data", "digits", "--limit", "8", "--out", str(tmp_path / "out")])
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and says in lines[0], r.output


def test_a_damaged_export_file_gives_one_line(tmp_path):
    """Found by a probe: torch.export logged a 13-20 line traceback before robustlab's one-line error."""
    import os
    import subprocess

    bad = tmp_path / "model.pt2"
    bad.write_bytes(os.urandom(3000))
    r = subprocess.run([sys.executable, "-m", "robustlab", "evaluate", "--model", str(bad), "--trust-code", "--data", "digits", "--no-mlflow", "-q",
                        "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "cannot load torch.export file" in lines[0], r.stderr


def test_torchscript_errors_are_reported_by_their_cause(tmp_path):
    """Found by a probe: the TorchScript interpreter's multi-line error was cut after 160 characters of its
    preamble ("The following operation failed ... File "code/__torch__.py", line"), losing the cause."""
    import torch
    from torch import nn

    from robustlab.errors import cause_line

    class Grey(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.head = nn.Linear(4, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.conv(x).mean((2, 3)))

    path = tmp_path / "grey.pt"
    torch.jit.script(Grey()).save(str(path))
    r = CliRunner().invoke(main, ["evaluate", "--model", str(path), "--trust-code", "--data", "samples:cifar10", "--no-mlflow", "--no-report", "--quiet",
                                  "--out", str(tmp_path / "out")])
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and "to have 1 channels, but got 3 channels" in lines[0], r.output
    assert cause_line(RuntimeError("one line")) == "one line" and cause_line(RuntimeError("")) == "RuntimeError"


def test_integer_weights_for_a_float_architecture_are_refused(tmp_path):
    """Found by a probe: a state dict of int64 tensors was cast to float silently (exit 0, accuracy 0.125)."""
    import torch

    from robustlab.models import load_model

    sd = load_model("zoo:digits-cnn", device="cpu").net.state_dict()
    torch.save({k: (v * 100).long() for k, v in sd.items()}, tmp_path / "int.pt")
    r = CliRunner().invoke(main, ["evaluate", "--model", str(tmp_path / "int.pt"), "--arch", "zoo-arch:digits-cnn", "--data", "digits", "--limit", "8",
                                  "--no-mlflow", "--no-report", "--quiet", "--out", str(tmp_path / "out")])
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1 and "hold integer tensors" in lines[0], r.output
    torch.save({k: v.half() for k, v in sd.items()}, tmp_path / "half.pt")  # another float type is the same weights, rounded
    r = CliRunner().invoke(main, ["evaluate", "--model", str(tmp_path / "half.pt"), "--arch", "zoo-arch:digits-cnn", "--data", "digits", "--limit", "8",
                                  "--suite", _clean_only_suite(tmp_path), "--no-mlflow", "--no-report", "--quiet", "--out", str(tmp_path / "out2")])
    assert r.exit_code == 0, r.output


def _clean_only_suite(tmp_path) -> str:  # noqa: N802 - a path, used like a constant
    p = tmp_path / "clean.yaml"
    p.write_text("name: c\nchecks:\n  - check: clean\n")
    return str(p)


def test_sigmoid_scores_are_warned_about(tmp_path, caplog):
    """Found by a probe: sigmoid outputs were read as logits with no word (exit 0, ECE 0.814)."""
    import logging

    with caplog.at_level(logging.WARNING, logger="robustlab"):
        got = _evaluate(tmp_path, "sig", "sigmoid_out", "name: s\nchecks:\n  - check: clean\n")
    assert got.code == 0 and "lies in [0, 1] but its rows do not sum to 1" in caplog.text
    with caplog.at_level(logging.WARNING, logger="robustlab"):
        caplog.clear()
        _evaluate(tmp_path, "logits", "zoo_digits", "name: s\nchecks:\n  - check: clean\n")
    assert "do not sum to 1" not in caplog.text


def test_wording_of_class_count_and_channel_mismatches(tmp_path):
    """--num-classes that causes the mismatch is not offered as its cure; a 1-channel model asks for 1 value."""
    def run(*args: str) -> str:
        r = CliRunner().invoke(main, ["evaluate", *args, "--limit", "8", "--no-mlflow", "--no-report", "--quiet", "--out", str(tmp_path / "o")])
        assert r.exit_code == 2, r.output
        return r.output
    assert "--num-classes 5 does not match them: leave it out" in run("--model", "zoo:digits-cnn", "--num-classes", "5")
    assert "1-channel images; give 1 value." in run("--model", "zoo:digits-cnn", "--mean", "0.5,0.5")
