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
