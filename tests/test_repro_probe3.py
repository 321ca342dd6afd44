"""Probe 3 of "the same seed gives the same scorecard" and "results are resumable", as a user relies on them.

Found by the probe: ``--seed 18446744073709551616`` (2**64) was accepted, then Square (AutoAttack's last member)
failed with ``ValueError: Overflow when unpacking long long``, so the check was recorded as an error and the run
exited 3 (inconclusive) instead of refusing the seed (exit 2); the README named neither the scorecard fields that
legitimately differ between two runs of one seed nor that Square's figures depend on ``--batch-size``; and
``check: attack`` with ``attack: square`` ignored ``--seed`` (Square kept its own default seed).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterator

import pytest
from click.testing import CliRunner

from robustlab.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"

SQUARE = """name: square-probe
checks:
  - check: attack
    id: sq
    params: {attack: square, n_queries: 100, norm: linf, epsilons: [0.1], audit: false}
"""

AUTOATTACK = """name: autoattack-probe
checks:
  - check: autoattack
    id: aa
    params: {norm: linf, version: standard, epsilons: [0.01], n_iter: 3, square_queries: 10, audit: false}
"""

SMALL = """name: small-probe
checks:
  - check: clean
  - check: pgd
    params: {norm: linf, steps: 3, audit: false}
  - check: corruption
    params: {corruptions: [gaussian_noise], severities: [3]}
"""


def _evaluate(suite: Path, out: Path, *extra: str) -> Any:
    return CliRunner().invoke(main, ["evaluate", "--model", "zoo:digits-cnn", "--data", "digits", "--suite", str(suite), "--out", str(out),
                                     "--no-mlflow", "--no-report", "--quiet", "--device", "cpu", "--threads", "1", *extra])


def _scorecard_section() -> str:
    text = README.read_text(encoding="utf-8")
    return text[text.index("### Scorecard"):text.index("## Service")]


def test_a_seed_past_64_bits_is_a_one_line_usage_error(tmp_path: Path) -> None:
    suite = tmp_path / "aa.yaml"
    suite.write_text(AUTOATTACK)
    r = _evaluate(suite, tmp_path / "o", "--limit", "8", "--seed", str(2**64))
    assert r.exit_code == 2, (r.exit_code, r.output)
    assert r.stderr.count("\n") == 1 and "--seed" in r.stderr, r.stderr
    assert not (tmp_path / "o" / "scorecard.json").exists()  # refused before any work


@pytest.mark.parametrize("seed", [-(2**63), 0, 2**63 - 1])
def test_every_64_bit_seed_runs_autoattack(tmp_path: Path, seed: int) -> None:
    suite = tmp_path / "aa.yaml"
    suite.write_text(AUTOATTACK)
    r = _evaluate(suite, tmp_path / "o", "--limit", "8", "--seed", str(seed))
    assert r.exit_code == 0, r.output
    card = json.loads((tmp_path / "o" / "scorecard.json").read_text())
    assert [c["status"] for c in card["checks"]] == ["ok"] and card["run"]["seed"] == seed


def _leaves(a: Any, b: Any, path: str = "") -> Iterator[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in set(a) | set(b):
            if k not in a or k not in b:
                yield f"{path}.{k}"
            else:
                yield from _leaves(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for x, y in zip(a, b):
            yield from _leaves(x, y, f"{path}[]")
    elif a != b:
        yield path


def _documented_name(path: str) -> str:
    """'.run.started' -> 'run.started'; '.timings.check/clean' -> 'timings'; '.checks[].seconds' -> 'seconds'."""
    parts = path.lstrip(".").split(".")
    if parts[0] == "checks[]":
        return parts[-1]
    return ".".join(parts[:2]) if parts[0] in ("run", "model", "tool") else parts[0]


def test_same_seed_runs_differ_only_in_fields_the_readme_names_run_specific(tmp_path: Path) -> None:
    suite = tmp_path / "small.yaml"
    suite.write_text(SMALL)
    args = ("--limit", "24", "--batch-size", "8", "--seed", "11")
    assert _evaluate(suite, tmp_path / "a", *args).exit_code == 0
    assert _evaluate(suite, tmp_path / "b", *args).exit_code == 0
    assert _evaluate(suite, tmp_path / "b", *args, "--resume").exit_code == 0  # every batch reused: a resumed scorecard
    a, b = (json.loads((tmp_path / d / "scorecard.json").read_text()) for d in ("a", "b"))
    differing = sorted({_documented_name(p) for p in _leaves(a, b)})
    assert "run.resumed" in differing and "timings" in differing, differing  # the probe itself sees what it should
    section = _scorecard_section()
    undocumented = [name for name in differing if f"`{name}`" not in section]
    assert not undocumented, f"fields that differ between two runs of one seed but are not named run-specific in the README: {undocumented}"
    same = {k: v for k, v in a.items() if k not in ("run", "timings", "environment")}
    assert same["checks"] == [{**c, "seconds": same["checks"][i]["seconds"]} for i, c in enumerate(b["checks"])]


def test_square_depends_on_the_batch_size_and_the_readme_says_so(tmp_path: Path) -> None:
    suite = tmp_path / "square.yaml"
    suite.write_text(SQUARE)
    flags = {}
    for bs in ("128", "7"):
        r = _evaluate(suite, tmp_path / bs, "--limit", "100", "--batch-size", bs, "--seed", "0")
        assert r.exit_code == 0, r.output
        flags[bs] = json.loads((tmp_path / bs / "scorecard.json").read_text())["checks"][0]["per_sample"]["robust/eps_0.1"]
    assert flags["128"] != flags["7"], "Square no longer depends on the batch size: drop the README's warning"
    sentence = " ".join(_scorecard_section().split())
    assert re.search(r"Square Attack \(AutoAttack's last member.*can change with `--batch-size`", sentence), sentence[-1200:]


def test_the_run_seed_reaches_square_in_an_attack_check(tmp_path: Path) -> None:
    """``check: attack`` with ``attack: square`` kept Square's own default seed (0) whatever ``--seed`` said: seeds 0
    and 5 gave the same flags, and the audit's "new seeds" rerun drew the very same squares."""
    suite = tmp_path / "square.yaml"
    suite.write_text(SQUARE)
    flags = {}
    for seed in ("0", "5"):
        r = _evaluate(suite, tmp_path / seed, "--limit", "100", "--seed", seed)
        assert r.exit_code == 0, r.output
        flags[seed] = json.loads((tmp_path / seed / "scorecard.json").read_text())["checks"][0]["per_sample"]["robust/eps_0.1"]
    assert flags["0"] != flags["5"]


def test_a_run_killed_while_logging_to_mlflow_does_not_stay_running(tmp_path: Path) -> None:
    """kill -9 (or SIGTERM) while the scorecard is being logged left its MLflow run RUNNING for ever beside the
    FINISHED run of the ``--resume`` that followed; the next run on the store marks it KILLED (robustlab's runs
    only: another tool's run in a shared store is left alone)."""
    from mlflow.tracking import MlflowClient

    suite = tmp_path / "clean.yaml"
    suite.write_text("name: clean-only\nchecks:\n  - check: clean\n")
    out = tmp_path / "o"
    args = ["evaluate", "--model", "zoo:digits-cnn", "--data", "digits", "--suite", str(suite), "--out", str(out), "--limit", "8",
            "--no-report", "--quiet", "--device", "cpu", "--threads", "1"]
    assert CliRunner().invoke(main, args).exit_code == 0
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    exp = client.get_experiment_by_name("robustlab").experiment_id
    killed = client.create_run(exp, tags={"robustlab.version": "x"}).info.run_id  # as a killed logger leaves it
    other = client.create_run(exp, tags={"another.tool": "1"}).info.run_id
    assert CliRunner().invoke(main, [*args, "--resume"]).exit_code == 0
    assert client.get_run(killed).info.status == "KILLED"
    assert client.get_run(other).info.status == "RUNNING"
    statuses = sorted(r.info.status for r in client.search_runs([exp]))
    assert statuses == ["FINISHED", "FINISHED", "KILLED", "RUNNING"], statuses


def test_a_refused_resume_names_the_option_that_changed(tmp_path: Path) -> None:
    """The run options sit in one fingerprint entry (``options``) whose values the message cut at 40 characters:
    with --no-fold-bn and --save-adversarial on, adding --fit-data was refused as 'options changed ({"dataset":
    "digits", "fold_bn": false,…' without naming --fit-data's setting."""
    from robustlab.errors import ResumeError
    from robustlab.store import ResultStore

    options = {"dataset": "digits", "fold_bn": False, "save_adversarial": True}
    first = ResultStore(tmp_path / "r.sqlite", {"seed": 0, "options": options})
    first.begin(resume=False)
    first.put("clean#x", "0:8", {"v": 1})
    first.close()
    changed = ResultStore(tmp_path / "r.sqlite", {"seed": 0, "options": {**options, "ood_fit_data": "npz:fit.npz"}})
    with pytest.raises(ResumeError) as e:
        changed.begin(resume=True)
    changed.close()
    msg = str(e.value)
    assert "\n" not in msg and "options.ood_fit_data changed" in msg and "npz:fit.npz" in msg, msg
    assert "fold_bn" not in msg and "save_adversarial" not in msg, msg  # the unchanged options are not named


def test_a_damaged_store_of_an_interrupted_run_is_set_aside_not_dropped_unsaid(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An interrupted run's store with the same settings and one edited batch value: --resume refuses it (exit 2),
    but a run without --resume deleted every stored batch, the good ones too, without a word (exit 0), where the
    README says such a store is set aside."""
    import sqlite3

    from robustlab.store import ResultStore

    db = tmp_path / "results.sqlite"
    first = ResultStore(db, {"seed": 0})
    first.begin(resume=False)
    first.put("clean#x", "0:8", {"pred": [1, 2]})
    first.put("clean#x", "8:16", {"pred": [3, 4]})
    first.close()  # never marked finished: an interrupted run
    c = sqlite3.connect(str(db))
    k, v = c.execute("SELECT k, v FROM results LIMIT 1").fetchone()
    c.execute("UPDATE results SET v=? WHERE k=?", (v.replace("1", "7").replace("3", "7"), k))
    c.commit()
    c.close()
    again = ResultStore(db, {"seed": 0})
    with caplog.at_level("WARNING", logger="robustlab.store"):
        assert again.begin(resume=False) == 0
    again.close()
    aside = [p for p in tmp_path.glob("results.sqlite.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]
    assert len(aside) == 1, sorted(p.name for p in tmp_path.iterdir())
    c = sqlite3.connect(str(aside[0]))
    assert c.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 2  # nothing computed is lost
    c.close()
    assert any("fail their checksum" in r.getMessage() and aside[0].name in r.getMessage() for r in caplog.records), caplog.text
