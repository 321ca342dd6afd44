"""Golden scorecards: the redesign (issue 15) and later refactors must not change a single number.

``quick`` and ``standard`` (on 120 of the 360 test digits) on ``zoo:digits-cnn``, and a clean+pgd+corruption+ood+certify suite on
``zoo:cifar10-resnet18`` (64 real CIFAR-10 test images), are compared field by field with the
scorecards stored in tests/golden/ (timings, dates, paths, the tool version and the environment aside).
The stored files are read through ``Scorecard.read``, so a schema change must come with a reader for
the old version for this test to pass. Regenerate with ``python scripts/make_golden.py`` only for a
change that is meant to alter the numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from golden_cases import CASES, GOLDEN, cold_cache_env, diff_cards, normalise

pytestmark = pytest.mark.integration

_diff = diff_cards


def _run_and_compare(name: str, tmp_path: Path, npz: Path | None) -> None:
    from robustlab.scorecard import Scorecard

    case = CASES[name]
    r = subprocess.run([sys.executable, "-m", "robustlab", *case.command(tmp_path / "out", npz)], capture_output=True, text=True, timeout=900,
                       env=cold_cache_env(tmp_path / "cache"))
    assert r.returncode == 0, r.stderr[-2000:]
    new = normalise(Scorecard.read(tmp_path / "out" / "scorecard.json").to_dict())
    golden = normalise(Scorecard.read(GOLDEN / f"{name}.json").to_dict())
    # JSON round trip on both sides: tuples vs lists and int vs float keys are not differences.
    new, golden = json.loads(json.dumps(new)), json.loads(json.dumps(golden))
    out: list[str] = []
    _diff(golden, new, "", out)
    assert not out, f"scorecard of {name!r} differs from tests/golden/{name}.json:\n" + "\n".join(out)


def test_golden_quick_digits(tmp_path):
    _run_and_compare("quick", tmp_path, None)


@pytest.mark.slow
def test_golden_standard_digits(tmp_path):
    _run_and_compare("standard", tmp_path, None)


@pytest.mark.slow
def test_golden_cifar_clean_pgd_corruption_ood_certify(tmp_path, cifar_npz):
    _run_and_compare("cifar", tmp_path, cifar_npz)


def test_the_comparison_catches_a_changed_number():
    """The differ itself: one changed metric, one missing key and one flipped per-sample entry are each reported."""
    golden = normalise(json.loads((GOLDEN / "quick.json").read_text()))
    changed = json.loads(json.dumps(golden))
    m = changed["checks"][0]["metrics"]
    key = next(iter(m))
    m[key] = m[key] + 1e-3
    changed["checks"][1]["metrics"].pop(next(iter(changed["checks"][1]["metrics"])))
    ps = changed["checks"][0]["per_sample"]["correct"]
    ps[0] = not ps[0]
    out: list[str] = []
    _diff(golden, changed, "", out)
    assert len(out) == 3, out
    same: list[str] = []
    _diff(golden, json.loads(json.dumps(golden)), "", same)
    assert same == []


def test_a_checkout_elsewhere_is_not_a_difference():
    """CI checks out at another path (/check/work/... instead of /work/...): a data folder inside notes
    and protocol texts must not count as a difference, while the file name still does."""
    golden = json.loads((GOLDEN / "cifar.json").read_text())
    text = json.dumps(golden)
    where = "npz:/work/shared/data/"
    assert where in json.dumps(golden["checks"]), "the stored CIFAR scorecard no longer names its data folder in a check"
    there = json.loads(text.replace(where, "npz:/check/work/shared/data/"))
    out: list[str] = []
    _diff(normalise(golden), normalise(there), "", out)
    assert out == []
    renamed = json.loads(text.replace(where + "cifar10_test_1000.npz", "npz:/check/other.npz"))
    out = []
    _diff(normalise(golden), normalise(renamed), "", out)
    assert out and all("other.npz" in line for line in out), out
