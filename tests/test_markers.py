"""The test suite's own bookkeeping: the reference/integration tables name real tests, and in CI a
skipped fidelity test fails instead of passing silently."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from _markers import INTEGRATION, REFERENCE

TESTS = Path(__file__).resolve().parent


def _test_functions(file: str) -> set[str]:
    tree = ast.parse((TESTS / file).read_text())
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test")}


@pytest.mark.parametrize("file", sorted(set(REFERENCE) | set(INTEGRATION)))
def test_tables_name_existing_tests(file: str) -> None:
    assert (TESTS / file).is_file(), f"{file} is listed in tests/_markers.py but does not exist"
    names = _test_functions(file)
    listed = set(REFERENCE.get(file, {})) | set(INTEGRATION.get(file, set()))
    missing = {n for n in listed if n != "*"} - names
    assert not missing, f"tests/_markers.py names tests that {file} does not have: {sorted(missing)}"


def _inner_run(tmp_path: Path, *, ci: bool, with_data: bool) -> subprocess.CompletedProcess[str]:
    """Run a tiny test file under this repository's conftest in a scratch folder."""
    root = tmp_path / ("ci" if ci else "dev") / ("data" if with_data else "nodata")
    tests = root / "repo" / "tests"
    tests.mkdir(parents=True)
    shutil.copy(TESTS / "conftest.py", tests / "conftest.py")
    (tests / "_markers.py").write_text('REFERENCE = {"test_inner.py": {"test_compares": "somelib"}}\nINTEGRATION = {}\n')
    (tests / "test_inner.py").write_text(
        "import pytest\n"
        "def test_uses_data(shared_data_dir):\n    pytest.skip('pretend the comparison could not run')\n"
        "def test_compares():\n    pytest.skip('reference library missing')\n"
        "def test_compares_ok():\n    pass\n"
        "def test_plain_skip():\n    pytest.skip('not a fidelity test')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "ROBUSTLAB_SHARED_DATA")}
    if ci:
        env["CI"] = "true"
    data = root / "shared" / "data"
    if with_data:
        data.mkdir(parents=True)
        (data / "cifar10_test_1000.npz").write_bytes(b"")
    env["ROBUSTLAB_SHARED_DATA"] = str(data)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs", str(tests)],
                          capture_output=True, text=True, cwd=root, env=env, timeout=300)


def test_ci_turns_fidelity_skips_into_failures(tmp_path: Path) -> None:
    res = _inner_run(tmp_path, ci=True, with_data=True)
    assert res.returncode == 1, res.stdout
    assert "2 failed, 1 passed, 1 skipped" in res.stdout, res.stdout
    assert "reference comparisons: 0 passed, 1 failed, 0 skipped" in res.stdout, res.stdout


def test_outside_ci_fidelity_skips_stay_skips_with_instructions(tmp_path: Path) -> None:
    res = _inner_run(tmp_path, ci=False, with_data=False)
    assert res.returncode == 0, res.stdout
    assert "1 passed, 3 skipped" in res.stdout, res.stdout
    assert "put cifar10_test_1000.npz" in res.stdout, res.stdout
    assert "reference comparisons: 0 passed, 0 failed, 1 skipped" in res.stdout, res.stdout


def test_ci_without_the_data_folder_still_skips(tmp_path: Path) -> None:
    """CI on a machine without ../shared/data: fidelity tests that need the images skip (nothing to compare)."""
    res = _inner_run(tmp_path, ci=True, with_data=False)
    assert "1 passed, 3 skipped" in res.stdout, res.stdout
