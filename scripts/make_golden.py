"""Regenerate the golden scorecards in tests/golden/ (the redesign's safety net).

    python scripts/make_golden.py [quick|standard|cifar ...]

Each case runs ``robustlab evaluate`` exactly as ``tests/test_golden.py`` does and stores the scorecard
with the volatile fields removed (timings, dates, paths, tool version, environment). Regenerate only
when a change is meant to alter the numbers, and list that change in the commit message.
The ``cifar`` case needs ../shared/data/cifar10_test_1000.npz.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from golden_cases import CASES, cold_cache_env, shared_npz, strip_volatile  # noqa: E402


def main(names: list[str]) -> None:
    from robustlab.scorecard import Scorecard

    for name in names or list(CASES):
        npz = shared_npz()
        if CASES[name].needs_cifar and npz is None:
            print(f"{name}: skipped (no ../shared/data/cifar10_test_1000.npz)")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            cmd = CASES[name].command(Path(tmp) / "out", npz)
            subprocess.run([sys.executable, "-m", "robustlab", *cmd], check=True, env=cold_cache_env(Path(tmp) / "cache"))
            card = strip_volatile(Scorecard.read(Path(tmp) / "out" / "scorecard.json").to_dict())
        out = ROOT / "tests" / "golden" / f"{name}.json"
        out.write_text(json.dumps(card, indent=0, sort_keys=True) + "\n")
        print(f"{name}: wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main(sys.argv[1:])
