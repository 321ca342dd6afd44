"""The package's type hints are checked by mypy (house style, rule 11)."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

@pytest.mark.timeout(900)
def test_mypy_clean():
    pytest.importorskip("mypy")
    proc = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "-p", "robustlab"], capture_output=True, text=True, cwd=ROOT, timeout=850)
    assert proc.returncode == 0, proc.stdout[-4000:]
    
