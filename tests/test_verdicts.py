"""One home for verdict aggregation: ``scorecard.worst_verdict`` (torch-free), used by the audit's
``overall_verdict`` and by the MLflow ``robustlab.audit`` tag."""

from __future__ import annotations

import itertools
import subprocess
import sys
from types import SimpleNamespace

import pytest

from robustlab.scorecard import AuditItem, Verdict, worst_verdict

SEVERITY = [Verdict.VALID, Verdict.SUSPECT, Verdict.INVALID]  # least to most severe


@pytest.mark.parametrize("verdicts", [list(p) for n in range(1, 4) for c in itertools.combinations(SEVERITY, n) for p in itertools.permutations(c)])
def test_worst_verdict_is_the_most_severe_whatever_the_order(verdicts: list[Verdict]) -> None:
    expected = max(verdicts, key=SEVERITY.index)
    assert worst_verdict(verdicts) is expected
    assert worst_verdict(iter(verdicts * 2)) is expected  # any iterable, repeats included


def test_worst_verdict_of_nothing_is_none() -> None:
    assert worst_verdict([]) is None


def test_audit_and_mlflow_tag_agree_with_worst_verdict() -> None:
    from robustlab.audit.adversarial import overall_verdict, verdict_code
    from robustlab.tracking.mlflow_log import _worst_audit

    assert overall_verdict([]) is Verdict.VALID
    assert _worst_audit(SimpleNamespace(checks=[SimpleNamespace(audit=[])])) == "none"  # type: ignore[arg-type]
    for a, b in itertools.product(SEVERITY, repeat=2):
        items = [AuditItem("x", a, ""), AuditItem("y", b, "")]
        worst = worst_verdict([a, b])
        assert overall_verdict(items) is worst
        card = SimpleNamespace(checks=[SimpleNamespace(audit=items[:1]), SimpleNamespace(audit=items[1:])])
        assert _worst_audit(card) == worst.value  # type: ignore[arg-type, union-attr]
    assert [verdict_code(v) for v in SEVERITY] == [0.0, 1.0, 2.0]


def test_worst_verdict_is_torch_free() -> None:
    code = "import sys; from robustlab.scorecard import worst_verdict; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
