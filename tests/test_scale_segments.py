"""bench/scale_segments.py: one scale row from a run made in segments (Ctrl-C, then --resume)."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))  # as when the script runs: it imports its sibling bench/scale.py
_SPEC = importlib.util.spec_from_file_location("scale_segments", BENCH / "scale_segments.py")
assert _SPEC and _SPEC.loader
seg = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(seg)

GNU_TIME = shutil.which("time", path="/usr/bin:/bin")


def _timed(code: str) -> str:
    """The `/usr/bin/time -v` report of a Python child running ``code``."""
    assert GNU_TIME
    r = subprocess.run([GNU_TIME, "-v", sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return r.stderr


@pytest.mark.skipif(GNU_TIME is None, reason="GNU time (/usr/bin/time, Debian package `time`) is not installed")
def test_parses_a_real_time_report() -> None:
    report = _timed("import time; b = bytearray(300 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(1.2)")
    s = seg.parse_segment(report)
    assert 1.2 <= s["seconds"] < 60
    assert 300 <= s["peak_rss_mib"] < 1024  # the 300 MiB touched, in MiB (time -v reports kB)
    assert s["exit_code"] == 0 and s["stored_batches_reused"] == 0
    interrupted = seg.parse_segment(_timed("import sys; print('resuming: 17 stored batch results reused', file=sys.stderr); raise SystemExit(130)"))
    assert interrupted["exit_code"] == 130 and interrupted["stored_batches_reused"] == 17


def test_clock_formats() -> None:
    assert seg._clock_seconds("1:19:09") == 4749
    assert seg._clock_seconds("0:01.25") == pytest.approx(1.25)
    assert seg._clock_seconds("12:03.5") == pytest.approx(723.5)


def test_an_unfinished_log_is_refused() -> None:
    with pytest.raises(ValueError, match="not a finished"):
        seg.parse_segment("progress: corruption: 35/75 (47%)\n")


def _segment(seconds: float, peak: float, code: int) -> dict:
    return {"seconds": seconds, "peak_rss_mib": peak, "exit_code": code, "stored_batches_reused": 0}


def test_combine_sums_time_takes_the_largest_peak_and_reads_the_scorecard(tmp_path: Path) -> None:
    card = tmp_path / "scorecard.json"
    card.write_text(json.dumps({"data": {"n": 250}, "timings": {"check/clean": 1.5, "check/ood": 2.0, "total": 9.0},
                                "environment": {"memory": {"peak_rss_mib_after_check": {"clean": 900.0}}}}))
    row = seg.combine([_segment(100.0, 1200.0, 130), _segment(50.5, 1300.5, 130), _segment(20.0, 1100.0, 0)], card)
    assert row["seconds"] == 170.5 and row["seconds_per_image"] == round(170.5 / 250, 4)
    assert row["peak_rss_mib"] == 1300.5 and row["exit_code"] == 0 and row["n"] == 250
    assert row["scorecard_bytes"] == card.stat().st_size and row["scorecard_bytes_per_image"] == round(card.stat().st_size / 250, 1)
    assert "seconds_by_check" not in row  # the scorecard's check times are the last segment's alone
    assert row["seconds_by_check_last_segment"] == {"clean": 1.5, "ood": 2.0}
    one = seg.combine([_segment(20.0, 1100.0, 0)], card)
    assert one["seconds_by_check"] == {"clean": 1.5, "ood": 2.0} and one["seconds"] == 20.0
    assert row["peak_rss_mib_after_check"] == {"clean": 900.0} and len(row["segments"]) == 3


def test_combine_refuses_a_segment_that_failed_before_the_last(tmp_path: Path) -> None:
    card = tmp_path / "scorecard.json"
    card.write_text(json.dumps({"data": {"n": 4}}))
    with pytest.raises(ValueError, match="exit 2"):
        seg.combine([_segment(1.0, 10.0, 2), _segment(1.0, 10.0, 0)], card)
    with pytest.raises(ValueError, match="no segments"):
        seg.combine([], card)
