"""A suite's explicit attack budget is in the model's input units; one written for [0, 1] inputs and
run on a model whose inputs span 0..255 attacks with a 255x smaller ball, and the scorecard reported
robust accuracy = clean accuracy with a valid audit and exit 0. Now the budget line warns and the
check's audit carries a suspect ``budget_scale`` item that says what to write."""

from __future__ import annotations

import json
import logging

import pytest
from click.testing import CliRunner
from torch import nn

from robustlab.attacks.base import Norm
from robustlab.attacks.scoring import budget_scale_problem
from robustlab.cli import main


class _Stub(nn.Module):
    def __init__(self, bounds, dataset):
        super().__init__()
        self.bounds = bounds
        self.input_shape = (3, 32, 32) if dataset == "cifar10" else (1, 8, 8)
        self.info = type("I", (), {"dataset": dataset})()


@pytest.mark.parametrize(
    "bounds, dataset, norm, eps, flagged",
    [
        ((0.0, 255.0), "cifar10", Norm.LINF, 8 / 255, True),  # the [0, 1] standard on 0..255 inputs
        ((0.0, 255.0), "cifar10", Norm.LINF, 8.0, False),  # the same budget in the model's units
        ((0.0, 255.0), "cifar10", Norm.L2, 0.5, True),  # the [0, 1] L2 standard on 0..255 inputs
        ((0.0, 255.0), "cifar10", Norm.L2, 0.5 * 255, False),
        ((0.0, 255.0), "digits", Norm.LINF, 0.1, True),  # 0.1 gray levels: below half an 8-bit step
        ((0.0, 1.0), "digits", Norm.LINF, 0.1, False),
        ((0.0, 1.0), "cifar10", Norm.LINF, 8 / 255, False),
        ((0.0, 1.0), "cifar10", Norm.LINF, 0.001, True),  # below half of 1/255
        ((0.0, 1.0), "cifar10", Norm.L2, 0.001, False),  # an L2 budget has no per-pixel floor
        ((-1.0, 1.0), "cifar10", Norm.LINF, 8 / 255, True),  # the standard is 16/255 on [-1, 1]
        ((-1.0, 1.0), "cifar10", Norm.LINF, 16 / 255, False),
        ((0.0, 1.0), "cifar10", Norm.LINF, 8.0, True),  # 0..255 units on [0, 1] inputs: robust accuracy 0 by construction
        ((0.0, 1.0), "digits", Norm.LINF, 0.5, True),
        ((0.0, 1.0), "digits", Norm.LINF, 0.3, False),  # large, but MNIST's standard is 0.3
        ((0.0, 1.0), "cifar10", Norm.L2, 8.0, False),  # L2 budgets grow with the dimension
    ],
)
def test_budget_scale_problem(bounds, dataset, norm, eps, flagged):
    msg = budget_scale_problem(_Stub(bounds, dataset), norm, eps)
    assert (msg is not None) == flagged, msg
    if msg:
        assert "input units" in msg


def _pgd_on_0_255(tmp_path, monkeypatch, eps: float, *, clean: bool = False) -> dict:
    """The pgd_linf check's scorecard entry for the digits CNN on 0..255 inputs with a suite budget of ``eps``."""
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent / "plugins"))
    suite = tmp_path / "s.yaml"
    first = "  - check: clean\n" if clean else ""
    suite.write_text(f"name: scale\nchecks:\n{first}  - check: pgd\n    id: pgd_linf\n    params: {{norm: linf, epsilons: [{eps}], steps: 5, audit: false}}\n")
    out = tmp_path / "o"
    r = CliRunner().invoke(
        main,
        ["evaluate", "--model", "factory:rl_test_models:zoo_digits_255", "--bounds", "0,255", "--dataset", "digits", "--data", "digits",
         "--suite", str(suite), "--limit", "40", "--out", str(out), "--no-mlflow", "--no-report"],
    )
    assert r.exit_code == 0, r.output
    card = json.loads((out / "scorecard.json").read_text())
    return next(c for c in card["checks"] if c["id"] == "pgd_linf")


def test_a_0_255_model_with_a_unit_range_suite_budget_is_flagged(tmp_path, monkeypatch):
    check = _pgd_on_0_255(tmp_path, monkeypatch, 0.1, clean=True)
    items = {i["name"]: i for i in check["audit"]}
    assert items["budget_scale"]["verdict"] == "suspect", items
    assert check["metrics"]["adversarial/pgd_linf/audit/verdict"] == 1.0


def test_the_budget_line_warns(tmp_path):
    from robustlab.checks import CHECKS
    from robustlab.pipelines.budget_note import budget_summary
    from robustlab.suite import load_suite

    suite = tmp_path / "s.yaml"
    suite.write_text("name: scale\nchecks:\n  - check: pgd\n    id: pgd_linf\n    params: {norm: linf, epsilons: [0.1], steps: 5}\n")
    entries = load_suite(str(suite)).entries
    line = budget_summary(_Stub((0.0, 255.0), "digits"), entries, CHECKS, "digits", "--dataset")
    assert line is not None and "WARNING" in line and "write 25.5" in line, line
    line = budget_summary(_Stub((0.0, 1.0), "digits"), entries, CHECKS, "digits", "--dataset")
    assert line is not None and "WARNING" not in line, line


def test_a_0_255_model_at_its_own_units_is_not_flagged(tmp_path, monkeypatch):
    check = _pgd_on_0_255(tmp_path, monkeypatch, 25.5)
    assert "budget_scale" not in {i["name"] for i in check["audit"]}



def test_defend_warns_about_a_budget_for_another_scale(caplog):
    from robustlab.defenses._budget import resolve_eps

    with caplog.at_level(logging.WARNING):
        assert resolve_eps(_Stub((0.0, 255.0), "cifar10"), 8 / 255, Norm.LINF) == pytest.approx(8 / 255)
    assert any("write 8" in r.getMessage() for r in caplog.records), caplog.text
