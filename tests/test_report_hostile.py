"""Hostile or careless scorecards and paths against `robustlab report`, `robustlab compare` and the
MLflow recording: each test pins one defect found by probing (a crash, a lost scorecard, an output
that breaks its format, a run MLflow refused)."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_report_cards import make_card

from robustlab.cli import main
from robustlab.scorecard import Series


@pytest.fixture(autouse=True)
def _no_ambient_mlflow(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)


def _run(*args: str):
    return CliRunner().invoke(main, list(args))


def _one_error_line(res, code: int = 2) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.exit_code == code, (res.exit_code, res.output)
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def _card_file(path: Path, **changes) -> Path:
    card = make_card()
    for section, values in changes.items():
        getattr(card, section).update(values)
    card.write(path)
    return path


def test_report_series_rows_not_a_list_is_drawn_without_a_crash(tmp_path):
    """A hand-edited series with ``rows: 5`` crashed the 'what was not tested' list (exit 4)."""
    card = make_card()
    adv = next(c for c in card.checks if c.id == "pgd")  # the 'not tested' list reads the series of adversarial checks
    adv.series["odd"] = Series(x=[1, 2], y={"a": [0.1, 0.2]}, kind="grid", rows=5)  # type: ignore[arg-type]
    sc = tmp_path / "scorecard.json"
    card.write(sc)
    res = _run("report", str(sc), "-o", str(tmp_path / "r.html"))
    assert res.exit_code == 0, res.output
    assert "plot odd could not be drawn" in (tmp_path / "r.html").read_text(encoding="utf-8")


def test_report_refuses_to_overwrite_the_scorecard(tmp_path):
    sc = _card_file(tmp_path / "scorecard.json")
    before = sc.read_bytes()
    line = _one_error_line(_run("report", str(sc), "-o", str(sc)))
    assert "scorecard itself" in line and sc.read_bytes() == before
    named = tmp_path / "sub" / "report.html"  # a scorecard named report.html: the default output is itself
    named.parent.mkdir()
    named.write_bytes(before)
    _one_error_line(_run("report", str(named)))
    assert named.read_bytes() == before


def test_report_refuses_the_detached_signature_path(tmp_path):
    """HTML written to SCORECARD.sig made every later `report` of the scorecard fail on a 'bad JSON' signature."""
    sc = _card_file(tmp_path / "scorecard.json")
    assert "detached signature" in _one_error_line(_run("report", str(sc), "-o", str(tmp_path / "scorecard.json.sig")))
    assert not (tmp_path / "scorecard.json.sig").exists()
    assert _run("report", str(sc), "-o", str(tmp_path / "r.html")).exit_code == 0


def test_report_refuses_an_empty_output_path(tmp_path):
    """``-o ""`` is the current folder: the atomic write crashed with EBUSY (exit 4)."""
    sc = _card_file(tmp_path / "scorecard.json")
    assert "-o FILE.html" in _one_error_line(_run("report", str(sc), "-o", ""))


def test_report_refuses_a_non_regular_output(tmp_path):
    """A FIFO (or a device such as /dev/full) was replaced by a regular file, and the command said it succeeded."""
    sc = _card_file(tmp_path / "scorecard.json")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert "not a regular file" in _one_error_line(_run("report", str(sc), "-o", str(fifo)))
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


@pytest.mark.parametrize("uri", ["{tmp}/not-a-store", "weird://host"])
def test_compare_run_id_with_an_unusable_tracking_uri_is_a_user_error(tmp_path, uri):
    """MLflow refuses a plain folder (file store) or an unknown scheme when the client is built: exit 4 before."""
    sc = _card_file(tmp_path / "a.json")
    res = _run("compare", str(sc), "0123456789abcdef0123456789abcdef", "--mlflow-uri", uri.format(tmp=tmp_path))
    assert "--mlflow-uri" in _one_error_line(res)


def _hostile_pair(tmp_path: Path) -> tuple[Path, Path]:
    spec = 'evil\n## injected heading\x1b[31m | a | b |<img src="https://evil.example/p.png">`code`[link](https://evil.example)'
    a = _card_file(tmp_path / "a.json")
    b = _card_file(tmp_path / "b.json", model={"spec": spec})
    return a, b


def test_compare_keeps_scorecard_text_on_one_line(tmp_path):
    a, b = _hostile_pair(tmp_path)
    res = _run("compare", str(a), str(b))
    assert res.exit_code == 0, res.output
    assert "\x1b" not in res.stdout and "\n## injected" not in res.stdout
    line = next(ln for ln in res.stdout.splitlines() if "model.spec" in ln)
    assert "\\n## injected heading\\x1b[31m" in line


def test_compare_markdown_escapes_scorecard_text(tmp_path):
    a, b = _hostile_pair(tmp_path)
    res = _run("compare", str(a), str(b), "--markdown")
    assert res.exit_code == 0, res.output
    out = res.stdout
    assert not re.search(r"(?<!\\)<img|(?<!\\)\]\(https", out)  # no tag, no link: both escaped
    assert "\n## injected" not in out and "\x1b" not in out
    line = next(ln for ln in out.splitlines() if "model.spec" in ln)
    assert "\\| a \\| b \\|" in line and "\\<img" in line and "\\`code\\`" in line


def test_compare_shows_a_huge_value_in_few_digits(tmp_path):
    a = make_card()
    b = make_card()
    key = "clean/nll"
    next(c for c in a.checks if c.check == "clean").metrics[key] = -1e308
    next(c for c in b.checks if c.check == "clean").metrics[key] = 1e308
    a.write(tmp_path / "a.json")
    b.write(tmp_path / "b.json")
    res = _run("compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"))
    assert res.exit_code == 0, res.output
    line = next(ln for ln in res.stdout.splitlines() if key in ln)
    assert "-1e+308 -> 1e+308" in line and len(line) < 120


def _runs(tmp_path: Path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}")
    exp = client.get_experiment_by_name("robustlab")
    return client.search_runs([exp.experiment_id])


def test_mlflow_records_a_card_with_a_long_check_id(tmp_path):
    """A legal check id of 245 characters made ``check/<id>/<param>`` longer than MLflow's 250: the
    whole recording failed. Long names are cut, with a hash that keeps them distinct."""
    from robustlab.tracking import log_scorecard

    card = make_card()
    card.checks[0].id = "c" * 245
    card.checks[0].params.update({"alpha": 1, "alphb": 2})
    log_scorecard(card, out_dir=tmp_path)
    (run,) = _runs(tmp_path)
    names = [k for k in run.data.params if k.startswith("check/ccc")]
    assert run.info.status == "FINISHED" and len(names) == len(card.checks[0].params) + 1
    assert all(len(k) <= 250 for k in names)


def test_mlflow_marks_a_half_logged_run_failed(tmp_path):
    """A recording that fails after its run was created left the run RUNNING for ever."""
    from robustlab.metric_keys import MetricKeyError
    from robustlab.tracking import log_scorecard

    card = make_card()
    card.checks[0].metrics["clean/" + "x" * 300] = 0.5  # a key MLflow would refuse: logging stops
    with pytest.raises(MetricKeyError):
        log_scorecard(card, out_dir=tmp_path)
    (run,) = _runs(tmp_path)
    assert run.info.status == "FAILED"



def test_a_key_label_reads_class_names_without_copying_them() -> None:
    """A report labels every key with its class name: copying the class list per key made 40,000
    classes take 22 s (keys x classes). The label must index the list, never walk it."""
    from collections.abc import Sequence

    from robustlab.metric_keys import parse

    class NoWalk(Sequence[str]):
        def __len__(self) -> int:
            return 40_000

        def __getitem__(self, i):  # type: ignore[no-untyped-def]
            if isinstance(i, slice):
                raise AssertionError("sliced")
            return f"c{i}"

        def __iter__(self):  # type: ignore[no-untyped-def]
            raise AssertionError("the class list was walked")

    assert parse("clean/class_3/accuracy").label(NoWalk()) == "clean/class_3 [c3]/accuracy"
    assert parse("clean/accuracy").label(None) == "clean/accuracy"


def test_report_warns_when_the_numbers_contradict_each_other(tmp_path):
    """A metric edited outside its own interval (or a fraction above 1) was rendered as if a run had
    written it; the gate refuses such a card, and the report now says so above every number."""
    import html

    card = make_card()
    assert card.validate_numbers() is None
    c = next(c for c in card.checks if c.intervals)
    key = next(iter(c.intervals))
    c.metrics[key] = 1.0 if c.intervals[key].high < 1.0 else 0.0  # outside its own interval
    sc = tmp_path / "scorecard.json"
    card.write(sc)
    res = _run("report", str(sc), "-o", str(tmp_path / "r.html"))
    assert res.exit_code == 0, res.output
    assert "contradict each other" in res.stderr
    page = html.unescape((tmp_path / "r.html").read_text(encoding="utf-8"))
    assert "contradict each other" in page and key in page.split("contradict each other", 1)[1][:400]
    ok = _card_file(tmp_path / "ok.json")
    res = _run("report", str(ok), "-o", str(tmp_path / "ok.html"))
    assert res.exit_code == 0 and "contradict" not in res.stderr and "contradict" not in (tmp_path / "ok.html").read_text(encoding="utf-8")


def test_scorecard_read_errors_name_the_real_problem(tmp_path):
    """`report` of /dev/null said 'does not exist', of '' 'scorecard . does not exist', and of a file an editor
    saved with a byte order mark 'bad JSON (Unexpected UTF-8 BOM)' without saying what to do."""
    golden = (Path(__file__).parent / "golden" / "quick.json").read_bytes()
    bom = tmp_path / "bom.json"
    bom.write_bytes(b"\xef\xbb\xbf" + golden)
    for arg, words in (("/dev/null", "not a regular file"), ("", "not a regular file"), (str(bom), "byte order mark")):
        line = _one_error_line(_run("report", arg, "-o", str(tmp_path / "r.html")))
        assert words in line, (arg, line)
