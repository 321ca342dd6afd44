"""Issue 13, part 1: resume never mixes configurations; stored results are checksummed; one run per
output folder at a time."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from robustlab.cli import main
from robustlab.errors import ResumeError
from robustlab.models import LoadOptions, load_model
from robustlab.runner import RunConfig, run_fingerprint
from robustlab.store import OutputLock, ResultStore
from robustlab.suite import load_suite

CLEAN = str(Path(__file__).parent / "suites" / "clean.yaml")


@pytest.fixture(scope="module")
def base():
    from robustlab.data import load_dataset

    raw = load_dataset("digits", split="test").limit(30)
    cfg = RunConfig(model_spec="zoo:digits-cnn", load=LoadOptions(device="cpu"), suite=load_suite(CLEAN), data_spec="digits", limit=30)
    return cfg, raw


_MODEL = {}


def _fp(cfg: RunConfig, raw, **info_overrides):
    if "m" not in _MODEL:
        _MODEL["m"] = load_model(cfg.model_spec, cfg.load)
    model = _MODEL["m"]
    info = model.info
    try:
        model.info = info.with_overrides(**info_overrides)
        return run_fingerprint(cfg, model, raw, cfg.data_spec or "digits")
    finally:
        model.info = info


# (what is changed, the fingerprint key that must be named)
CHANGES = [
    ("mean", "model.mean"), ("std", "model.std"), ("bounds", "model.bounds"), ("num_classes", "model.num_classes"),
    ("class_names", "model.class_names"), ("input_shape", "model.input_shape"), ("feature_layer", "model.feature_layer"),
    ("arch", "model.architecture"), ("seed", "seed"), ("precision", "precision"), ("channels_last", "channels_last"),
    ("compile", "compile"), ("batch_size", "batch_size"), ("suite", "suite.sha256"), ("limit", "data.ids_sha256"),
    ("data", "data"), ("trust_code", "model.trusted"), ("options", "options"),
]


def _changed(cfg: RunConfig, raw, what: str):
    over: dict = {}
    if what == "mean":
        over = {"mean": (0.5,)}
    elif what == "std":
        over = {"std": (0.25,)}
    elif what == "bounds":
        over = {"bounds": (0.0, 255.0)}
    elif what == "num_classes":
        over = {"num_classes": 11}
    elif what == "class_names":
        over = {"class_names": tuple("abcdefghij")}
    elif what == "input_shape":
        over = {"input_shape": (1, 16, 16)}
    elif what == "feature_layer":
        over = {"feature_layer": "net.0"}
    elif what == "arch":
        over = {"architecture": "zoo-arch:other"}
    if over:
        return _fp(cfg, raw, **over)
    if what == "seed":
        return _fp(replace(cfg, seed=1), raw)
    if what == "precision":
        return _fp(replace(cfg, precision="bf16"), raw)
    if what == "channels_last":
        return _fp(replace(cfg, channels_last=True), raw)
    if what == "compile":
        return _fp(replace(cfg, compile=True), raw)
    if what == "batch_size":
        return _fp(replace(cfg, batch_size=7), raw)
    if what == "suite":
        return _fp(replace(cfg, suite=load_suite("quick")), raw)
    if what == "limit":
        return _fp(replace(cfg, limit=20), raw.limit(20))
    if what == "data":
        y = raw.y.clone()
        y[0] = (y[0] + 1) % 10
        return _fp(cfg, replace(raw, y=y))
    if what == "trust_code":
        return _fp(cfg, raw, trusted=True)
    if what == "options":
        return _fp(replace(cfg, ood_fit_data="npz:x.npz"), raw)
    raise AssertionError(what)


@pytest.mark.parametrize("what,key", CHANGES, ids=[c[0] for c in CHANGES])
def test_resume_refused_for_each_fingerprint_field(tmp_path, base, what, key):
    cfg, raw = base
    first = _fp(cfg, raw)
    s = ResultStore(tmp_path / "r.sqlite", first)
    s.begin(resume=False)
    s.put("clean#x", "0:10", {"v": 1})
    s.close()
    same = ResultStore(tmp_path / "r.sqlite", _fp(cfg, raw))
    assert same.begin(resume=True) == 1  # an unchanged run resumes
    same.close()
    changed = _changed(cfg, raw, what)
    s2 = ResultStore(tmp_path / "r.sqlite", changed)
    with pytest.raises(ResumeError) as e:
        s2.begin(resume=True)
    msg = str(e.value)
    assert "\n" not in msg and key in msg.split("(")[0], msg
    s2.close()


def _edit_value(db: Path, new: str) -> None:
    with sqlite3.connect(str(db)) as c:
        k, v = c.execute("SELECT k, v FROM results LIMIT 1").fetchone()
        c.execute("UPDATE results SET v=? WHERE k=?", (new, k))


def test_edited_stored_result_is_refused_on_resume(tmp_path):
    s = ResultStore(tmp_path / "r.sqlite", {"a": 1})
    s.begin(resume=False)
    s.put("clean#x", "0:10", {"correct": [True] * 10})
    s.close()
    _edit_value(tmp_path / "r.sqlite", json.dumps({"correct": [False] * 10}))
    s2 = ResultStore(tmp_path / "r.sqlite", {"a": 1})
    with pytest.raises(ResumeError, match="checksum"):
        s2.begin(resume=True)
    assert s2.begin(resume=False) == 0  # a fresh run still works
    s2.close()


def test_corrupt_store_is_set_aside_without_resume_and_refused_with_it(tmp_path):
    db = tmp_path / "results.sqlite"
    db.write_bytes(b"this is not a database" * 100)
    s = ResultStore(db, {"a": 1})
    with pytest.raises(ResumeError, match="not a readable result store"):
        s.begin(resume=True)
    s.close()
    s = ResultStore(db, {"a": 1})
    assert s.begin(resume=False) == 0
    s.put("c", "k", 1)
    assert s.get("c", "k") == 1
    s.close()
    assert list(tmp_path.glob("results.sqlite.corrupt-*"))


def test_cli_resume_without_mean_std_is_refused_and_edited_value_detected(tmp_path):
    out = tmp_path / "o"
    args = ["evaluate", "--model", "zoo:digits-cnn", "--data", "digits", "--limit", "40", "--suite", CLEAN, "--out", str(out),
            "--no-mlflow", "--no-report", "--quiet", "--device", "cpu"]
    r = CliRunner().invoke(main, [*args, "--mean", "0.5", "--std", "0.25"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main, [*args, "--resume"])
    assert r.exit_code == 2 and "model.mean" in r.stderr and "model.std" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1
    # a fresh run with the same options, then an edited batch result
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 0
    acc = json.loads((out / "scorecard.json").read_text())["checks"][0]["metrics"]["clean/accuracy"]
    with sqlite3.connect(str(out / "results.sqlite")) as c:
        k, v = c.execute("SELECT k, v FROM results LIMIT 1").fetchone()
        d = json.loads(v)
        d["pred"] = [(p + 1) % 10 for p in d["pred"]]  # every prediction now wrong
        c.execute("UPDATE results SET v=? WHERE k=?", (json.dumps(d), k))
    r = CliRunner().invoke(main, [*args, "--resume"])
    assert r.exit_code == 2 and "checksum" in r.stderr, r.stderr
    assert json.loads((out / "scorecard.json").read_text())["checks"][0]["metrics"]["clean/accuracy"] == acc


def test_cli_corrupt_results_sqlite_without_resume_runs(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "results.sqlite").write_bytes(b"\x00garbage" * 500)
    r = CliRunner().invoke(main, ["evaluate", "--model", "zoo:digits-cnn", "--data", "digits", "--limit", "20", "--suite", CLEAN,
                                  "--out", str(out), "--no-mlflow", "--no-report", "--quiet", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert (out / "scorecard.json").is_file()


def test_output_folder_lock_refuses_a_second_run(tmp_path):
    out = tmp_path / "o"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys,time; from pathlib import Path; from robustlab.store import OutputLock\n"
         f"l = OutputLock(Path({str(out)!r}), command='robustlab evaluate --first'); l.acquire(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        r = CliRunner().invoke(main, ["evaluate", "--model", "zoo:digits-cnn", "--data", "digits", "--limit", "20", "--suite", CLEAN,
                                      "--out", str(out), "--no-mlflow", "--quiet", "--device", "cpu"])
        assert r.exit_code == 2, r.output
        assert r.stderr.count("\n") == 1 and f"pid {holder.pid}" in r.stderr and "--first" in r.stderr, r.stderr
        assert not (out / "scorecard.json").exists() and not (out / "results.sqlite").exists()
    finally:
        holder.kill()
        holder.wait()
    # the kernel released the lock with the process: the folder is usable again
    with OutputLock(out):
        pass
