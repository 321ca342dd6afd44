"""The attack contract, for every registered attack (built-ins and plugins alike): examples stay in
their epsilon ball and in the model's bounds, success is re-checked by the base, the same seed gives
the same result, and the batch size does not change it; the final entry points cannot be overridden;
an attack that writes only ``run()`` works end to end through the generic ``attack`` check."""

from __future__ import annotations

import inspect
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

from robustlab.attacks.base import ATTACKS, FixedEpsilonAttack, MinimizationAttack
from robustlab.attacks.geometry import norms
from robustlab.attacks.recheck import recheck
from robustlab.attacks.threat import Norm
from robustlab.checks import CHECKS
from robustlab.errors import SuiteError

from test_adversarial_checks import _ctx, _run

PLUGINS = str(Path(__file__).parent / "plugins")

#: small budgets so that the contract runs in seconds on a CPU (names an attack does not take are dropped)
FAST: dict[str, Any] = {"steps": 5, "n_iter": 8, "n_queries": 60, "square_queries": 60, "binary_search_steps": 2, "candidates": 5, "n_targets": 2}
#: attacks whose result depends on the batch by design (Square draws one square position per
#: iteration for the whole batch, as the reference does; AutoAttack contains Square).
BATCH_DEPENDENT = {"square", "autoattack"}


def _make(name: str, norm: Norm = Norm.LINF) -> Any:
    cls = ATTACKS.get(name)
    hp = cls.hyperparameters()
    kw = {k: v for k, v in FAST.items() if k in hp}
    if "norm" in hp:
        kw["norm"] = norm if norm in cls.norms_supported else cls.norms_supported[0]
    return cls(**kw)


@pytest.fixture(scope="module")
def pts(digits_data):
    d = digits_data.limit(12)
    return d.images(slice(0, 12)), d.y[:12]


pytestmark = pytest.mark.usefixtures("one_thread")  # attack loops: many small passes


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_keeps_the_contract(name, digits_model, pts) -> None:
    x, y = pts
    attack = _make(name)
    eps = 0.1 if attack.norm is Norm.LINF else 1.0
    seeds = list(range(100, 112))
    if isinstance(attack, FixedEpsilonAttack):
        r = attack.sweep(digits_model, x, y, [eps], seeds=seeds)
        xa = r.x_adv[0]
        assert float(norms(xa - x, attack.norm).max()) <= eps * (1 + 1e-4) + 1e-6
        rc = recheck(digits_model, x, xa, y, eps, attack.norm, (0.0, 1.0))
        assert torch.equal(r.success[0], rc.valid)  # success is the base's own re-check
        assert bool(r.success[0].any()), f"{name} broke no digit at eps {eps}"
        again = attack.sweep(digits_model, x, y, [eps], seeds=seeds).x_adv[0]
        assert torch.equal(xa, again)
        if name not in BATCH_DEPENDENT:
            parts = torch.cat([attack(digits_model, x[i : i + 5], y[i : i + 5], eps, seeds=seeds[i : i + 5]) for i in range(0, 12, 5)])
            whole = attack(digits_model, x, y, eps, seeds=seeds)
            # per-sample results do not depend on the batch. Up to the sign of a gradient coordinate that
            # is floating-point noise: convolutions on different batch sizes may pick different kernels,
            # and a coordinate at 4e-10 in one is -1e-9 in the other (seen with a max |grad| of 3e-3), so
            # a signed step may differ there. The broken points must be the same.
            differ = ~torch.isclose(parts, whole, atol=1e-6)
            assert int(differ.sum()) <= max(1, differ.numel() // 200), f"{int(differ.sum())} of {differ.numel()} coordinates depend on the batch"
            flags = [recheck(digits_model, x, a, y, eps, attack.norm, (0.0, 1.0)).valid for a in (parts, whole)]
            assert torch.equal(*flags)
    else:
        assert isinstance(attack, MinimizationAttack)
        m = attack(digits_model, x, y, seeds=seeds)
        rc = recheck(digits_model, x, m.x_adv, y, math.inf, attack.norm, (0.0, 1.0))
        finite = torch.isfinite(m.min_norm) & (m.min_norm > 0)
        assert bool(finite.any()) and bool(rc.valid[finite].all())
        assert torch.allclose(m.min_norm[finite], rc.norms[finite])
        assert float(m.x_adv.min()) >= -1e-6 and float(m.x_adv.max()) <= 1 + 1e-6
        again = attack(digits_model, x, y, seeds=seeds)
        assert torch.equal(m.min_norm, again.min_norm)
        parts = torch.cat([attack(digits_model, x[i : i + 5], y[i : i + 5], seeds=seeds[i : i + 5]).min_norm for i in range(0, 12, 5)])
        assert torch.allclose(parts, m.min_norm, rtol=1e-4, equal_nan=True)
    assert float(xa.min() if isinstance(attack, FixedEpsilonAttack) else m.x_adv.min()) >= 0.0


def test_the_entry_points_are_final() -> None:
    with pytest.raises(TypeError, match="final"):

        class Sneaky(FixedEpsilonAttack):  # noqa: F841 - defining it is the test
            def sweep(self, *a: Any, **k: Any) -> Any:  # type: ignore[misc, override]
                return None

            def run(self, *a: Any, **k: Any) -> Any:
                return None

    with pytest.raises(TypeError, match="final"):

        class Sneaky2(MinimizationAttack):  # noqa: F841
            def __call__(self, *a: Any, **k: Any) -> Any:  # type: ignore[misc, override]
                return None

            def run(self, *a: Any, **k: Any) -> Any:
                return None


def test_every_attack_lists_its_keyword_only_hyperparameters() -> None:
    for name, cls in ATTACKS.items():
        hp = cls.hyperparameters()
        assert all(h.default is not inspect.Parameter.empty for h in hp.values()), name  # keyword-only with defaults
        cls(**{k: h.default for k, h in hp.items()})  # the defaults construct the attack


def test_generic_check_equals_the_named_check(digits_model, digits_data) -> None:
    small = digits_data.limit(32)
    named = _run("pgd", _ctx(digits_model, small), steps=5, rel_stepsize=0.5, epsilons=[0.05, 0.1], audit=False)
    generic = CHECKS.get("attack")
    p = generic.parse_params({"attack": "pgd", "steps": 5, "rel_stepsize": 0.5, "epsilons": [0.05, 0.1], "audit": False})
    r = generic(id="pgd", params=p).run(_ctx(digits_model, small))
    assert r.metrics.keys() == named.metrics.keys()
    assert r.metrics == named.metrics
    assert r.per_sample == named.per_sample


def test_generic_check_validates_against_the_attacks_own_parameters() -> None:
    generic = CHECKS.get("attack")
    with pytest.raises(SuiteError, match="unknown parameter 'stepz'.*steps"):
        generic.parse_params({"attack": "pgd", "stepz": 3})
    with pytest.raises(SuiteError, match="unknown attack 'pgdd'.*Did you mean 'pgd'"):
        generic.parse_params({"attack": "pgdd"})
    with pytest.raises(SuiteError, match="pgd.steps must be an integer"):
        generic.parse_params({"attack": "pgd", "steps": "many"})
    with pytest.raises(SuiteError, match="minimal-norm attack"):
        generic.parse_params({"attack": "fmn"})
    with pytest.raises(SuiteError, match="supports norm l2"):
        CHECKS.get("minimal_norm").parse_params({"attack": "cw_l2", "norm": "linf"})
    p = generic.parse_params({"attack": "square", "n_queries": 10, "norm": "linf"})
    assert p.norm is Norm.LINF and p.hyperparameters == {"n_queries": 10}


def _cli(args: list[str], site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(site), PLUGINS, os.environ.get("PYTHONPATH", "")) if p)}
    return subprocess.run([sys.executable, "-m", "robustlab", *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.mark.slow
def test_third_party_attack_runs_end_to_end_through_the_generic_check(tmp_path) -> None:
    dist = tmp_path / "site" / "rl_attack_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: rl-attack-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[robustlab.attacks]\nsign_steps = rl_test_attacks:SignSteps\n")
    suite = tmp_path / "s.yaml"
    suite.write_text("name: plugin-attack\nchecks:\n  - check: attack\n    id: sign_steps_linf\n    params: {attack: sign_steps, steps: 2, epsilons: [0.05, 0.1], audit_samples: 8}\n")
    r = _cli(["evaluate", "--model", "zoo:digits-cnn", "--suite", str(suite), "--limit", "32", "--out", str(tmp_path / "o"), "--no-mlflow", "--quiet"], tmp_path / "site")
    assert r.returncode == 0, r.stderr
    card = json.loads((tmp_path / "o" / "scorecard.json").read_text())
    (c,) = card["checks"]
    m = {k: v["value"] if isinstance(v, dict) else v for k, v in c["metrics"].items()}
    clean, ra = m["adversarial/sign_steps_linf/clean_accuracy"], m["adversarial/sign_steps_linf/eps_0.1/robust_accuracy"]
    assert ra <= m["adversarial/sign_steps_linf/eps_0.05/robust_accuracy"] <= clean and ra < clean
    assert len(c["per_sample"]["robust/eps_0.1"]) == 32
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nchecks:\n  - check: attack\n    params: {attack: sign_steps, stepz: 2}\n")
    r = _cli(["evaluate", "--model", "zoo:digits-cnn", "--suite", str(bad), "--out", str(tmp_path / "o2"), "--no-mlflow", "--quiet"], tmp_path / "site")
    assert r.returncode == 2 and "stepz" in r.stderr and "steps" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_readme_attack_example_runs_through_the_generic_check(digits_model, digits_data) -> None:
    """The ``### An attack`` code block of README.md, executed as is, then run by ``check: attack``."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("### An attack", 1)[1].split("\n#", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    namespace: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the documented example itself
    assert "gradient_step" in ATTACKS and len(code.strip().splitlines()) <= 20
    check = CHECKS.get("attack")
    p = check.parse_params({"attack": "gradient_step", "alpha": 1.0, "norm": "linf", "epsilons": [0.05, 0.1], "audit": False})
    r = check(id="gradient_step", params=p).run(_ctx(digits_model, digits_data.limit(32)))
    m = r.metrics
    assert m["adversarial/gradient_step/eps_0.1/robust_accuracy"] < m["adversarial/gradient_step/clean_accuracy"]
    with pytest.raises(SuiteError, match="alpha"):
        check.parse_params({"attack": "gradient_step", "alpah": 2.0})


def test_one_budget_table_for_checks_defenses_and_the_report() -> None:
    """Budgets live once (robustlab.attacks.threat, torch-free): the report's 'not tested' list reads
    the field's standard ones from it, the checks resolve defaults from the same table."""
    from robustlab.attacks.threat import BUDGETS, Budget, dataset_key, standard_budgets
    from robustlab.report import untested

    assert untested.STANDARD_BUDGETS == {ds: {n.value: (b.eps, b.label) for n, b in standard_budgets(ds).items()} for ds in BUDGETS if standard_budgets(ds)}
    # REFERENCES.md: CIFAR-10/100 Linf 8/255, CIFAR-10 L2 0.5, ImageNet Linf 4/255, MNIST Linf 0.3
    std = {(ds, n.value): b.eps for ds in BUDGETS for n, b in standard_budgets(ds).items()}
    assert std == {("cifar10", "linf"): 8 / 255, ("cifar10", "l2"): 0.5, ("cifar100", "linf"): 8 / 255, ("imagenet", "linf"): 4 / 255, ("mnist", "linf"): 0.3}
    assert BUDGETS["imagenet"][Norm.L2] == Budget(3.0, "3.0", False) and BUDGETS["digits"][Norm.LINF].eps == 0.1
    assert [dataset_key(s) for s in ("CIFAR-100", "cifar10", "fashion-mnist", "mnist", "imagenet-val")] == ["cifar100", "cifar10", None, "mnist", "imagenet"]


def test_attack_layer_never_imports_checks_runner_or_scorecard() -> None:
    code = "import sys; from robustlab.attacks.base import ATTACKS; ATTACKS.names(); bad = [m for m in sys.modules if m.startswith(('robustlab.checks', 'robustlab.runner', 'robustlab.scorecard'))]; print(bad)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
    r = subprocess.run([sys.executable, "-c", "import sys, robustlab.attacks.threat, robustlab.report.untested; print('torch' in sys.modules)"], capture_output=True, text=True, timeout=300)
    assert r.stdout.strip() == "False", r.stdout + r.stderr


def test_adversarial_keys_follow_the_grammar(digits_model, digits_data) -> None:
    """Every metric and per-sample key of the adversarial checks is MLflow-legal as is and parses
    back to its epsilon, class index and ensemble member; schema-1 names upgrade to the same keys."""
    from robustlab import metric_keys as mk

    data = digits_data.limit(16)
    runs = [
        _run("pgd", _ctx(digits_model, data), steps=2, epsilons=[0.1], audit_samples=4),
        _run("autoattack", _ctx(digits_model, data), epsilons=[0.1], n_iter=4, square_queries=10, audit=False),
        _run("minimal_norm", _ctx(digits_model, data), attack="deepfool", norm="linf", steps=5, epsilons=[0.1], audit=False),
    ]
    for r in runs:
        for k in list(r.metrics) + list(r.per_sample):
            assert mk.is_legal_key(k), k
        assert mk.parse(mk.key("adversarial", r.id, "eps_0.1", "robust_accuracy")).eps == 0.1
        assert r.per_sample["robust/eps_0.1"] and mk.upgrade_v1_key("robust@eps=0.1") == "robust/eps_0.1"
    aa = runs[1].metrics
    assert mk.parse("adversarial/autoattack/eps_0.1/after_fab-t/robust_accuracy").after == "fab-t"
    assert "adversarial/autoattack/eps_0.1/after_fab-t/robust_accuracy" in aa
    cls_keys = [k for k in runs[0].metrics if "/class_" in k]
    assert cls_keys and all(mk.parse(k).class_index in range(10) for k in cls_keys)
    assert mk.upgrade_v1_key("adversarial/pgd/eps=0.1/class=3/robust_accuracy", [str(i) for i in range(10)]) in runs[0].metrics
