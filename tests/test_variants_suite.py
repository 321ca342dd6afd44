"""The integer-attack settings come from the suite: an ``integer_attack`` entry's typed params
(pgd_steps, pgd_restarts, square_queries) are validated with the suite, reach the attacks, and are
recorded in the variant's scorecard."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from robustlab.errors import SuiteError
from robustlab.models import LoadOptions
from robustlab.pipelines import variants as variants_mod
from robustlab.pipelines.evaluate import RunConfig
from robustlab.pipelines.variants import VariantOptions, evaluate_variants
from robustlab.scorecard import Scorecard, Status
from robustlab.suite import parse_suite

REAL = variants_mod.integer_robustness


def _suite(params: str, cid: str = "int_attack") -> str:
    return f"checks:\n  - clean\n  - check: integer_attack\n    id: {cid}\n    params: {params}\n"


def _run(tmp: Path, params: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Scorecard, Scorecard, dict[str, Any]]:
    """evaluate --variants int8-dynamic with the suite; returns the base and variant scorecards and
    what the integer attacks were given and did (forward passes of the variant and of the base)."""
    seen: dict[str, Any] = {"variant_forwards": 0, "base_forwards": 0}
    def spy(variant, base, x, y, eps, **kw):  # type: ignore[no-untyped-def]
        seen.update(kw)
        hooks = [variant.register_forward_hook(lambda *_: seen.__setitem__("variant_forwards", seen["variant_forwards"] + 1)),
                 base.register_forward_hook(lambda *_: seen.__setitem__("base_forwards", seen["base_forwards"] + 1))]
        try:
            return REAL(variant, base, x, y, eps, **kw)
        finally:
            for h in hooks:
                h.remove()

    monkeypatch.setattr(variants_mod, "integer_robustness", spy)
    cfg = RunConfig(model_spec="zoo:digits-cnn", load=LoadOptions(), suite=parse_suite(_suite(params), source="s.yaml"), out_dir=tmp, limit=8, quiet=True, batch_size=8)
    base, runs, _ = evaluate_variants(cfg, ["int8-dynamic"], VariantOptions(latency_batch=4))
    return Scorecard.read(tmp / "base" / "scorecard.json"), Scorecard.read(tmp / runs[0].name / "scorecard.json"), seen


def test_suite_settings_reach_the_integer_attacks_and_the_scorecard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, small, s_seen = _run(tmp_path / "a", "{pgd_steps: 1, square_queries: 3}", monkeypatch)
    base, big, b_seen = _run(tmp_path / "b", "{pgd_steps: 4, pgd_restarts: 2, square_queries: 12}", monkeypatch)
    for card, (steps, restarts, queries) in ((small, (1, 1, 3)), (big, (4, 2, 12))):
        r = card.check("int_attack")
        assert r is not None and r.status is Status.OK and r.check == "integer_attack", (r and r.reason)
        assert (r.params["pgd_steps"], r.params["pgd_restarts"], r.params["square_queries"]) == (steps, restarts, queries)
        assert any(k.startswith("adversarial/int_attack/") and k.endswith("/worst/robust_accuracy") for k in r.metrics)
        assert [c.id for c in card.checks].count("int_attack") == 1  # the suite's entry, not a second one
    assert (s_seen["steps"], s_seen["restarts"], s_seen["square_queries"]) == (1, 1, 3)
    assert (b_seen["steps"], b_seen["restarts"], b_seen["square_queries"]) == (4, 2, 12)
    assert b_seen["base_forwards"] > s_seen["base_forwards"] and b_seen["variant_forwards"] > s_seen["variant_forwards"]
    b = base.check("int_attack")  # the base model is not an integer model: recorded, with the reason
    assert b is not None and b.status is Status.SKIPPED and "not an integer" in (b.reason or "") and not b.metrics


@pytest.mark.parametrize("params,match", [("{pgd_step: 3}", "did you mean 'pgd_steps'"), ("{square_querie: 3}", "did you mean 'square_queries'"),
                                          ("{pgd_steps: 0}", "pgd_steps must be between"), ("{pgd_restarts: two}", "must be an integer"),
                                          ("{square_queries: 2.5}", "must be an integer")])
def test_bad_integer_attack_settings_are_refused_with_the_suite(params: str, match: str) -> None:
    with pytest.raises(SuiteError, match=match):
        parse_suite(_suite(params), source="s.yaml")
