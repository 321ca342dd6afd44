"""The package's type hints are checked by mypy (house style, rule 11)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

@pytest.mark.timeout(900)
def test_mypy_clean(tmp_path):
    """mypy is clean on the package, and (same run, one mypy start) it rejects a subclass that overrides
    an attack's final entry point (``typing.final`` on ``FixedEpsilonAttack.perturb``)."""
    pytest.importorskip("mypy")
    snippet = tmp_path / "sneaky_attack.py"
    snippet.write_text(
        "from typing import Any\n"
        "import torch\n"
        "from robustlab.attacks.base import FixedEpsilonAttack\n\n\n"
        "class Sneaky(FixedEpsilonAttack):\n"
        "    def perturb(self, *a: Any, **k: Any) -> torch.Tensor:\n"
        "        return torch.zeros(1)\n"
    )
    proc = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), str(ROOT / "robustlab"), str(snippet)], capture_output=True, text=True, cwd=ROOT, timeout=850)
    errors = [ln for ln in proc.stdout.splitlines() if ": error:" in ln]
    in_package = [ln for ln in errors if "sneaky_attack.py" not in ln]
    assert not in_package, proc.stdout[-4000:]
    assert proc.returncode == 1 and any("final" in ln.lower() for ln in errors), proc.stdout[-4000:]
    
