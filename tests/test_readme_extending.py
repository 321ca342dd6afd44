"""Every Python example of the README's "Extending robustlab" section runs as written (in a fresh
interpreter, one after the other), and the section has an example for every plugin kind."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
KINDS = ("A model loader", "A data source", "A corruption", "A detector", "A defense", "A check", "A gate protocol")


def extending_section() -> str:
    text = README.read_text()
    start = text.index("## Extending robustlab")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def examples() -> dict[str, str]:
    """``{heading: code}`` for each ``### heading`` of the section with a python block."""
    out: dict[str, str] = {}
    for part in re.split(r"\n### ", extending_section())[1:]:
        heading = part.splitlines()[0].strip()
        blocks = re.findall(r"```python\n(.*?)```", part, flags=re.S)
        if blocks:
            out[heading] = "\n".join(blocks)
    return out


def test_every_kind_has_a_short_example() -> None:
    ex = examples()
    assert set(KINDS) <= set(ex), sorted(ex)
    for kind in KINDS:
        assert len(ex[kind].strip().splitlines()) <= 20, kind


def test_readme_examples_run() -> None:
    code = "\n".join(f"# --- {h}\n{c}" for h, c in examples().items())
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
