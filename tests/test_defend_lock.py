"""A second `defend` on the same --out while the first still runs: with --overwrite it deleted the
checkpoints the first was writing (no lock). Now the run holds `.OUT.lock` beside the output and the
second stops with exit 2, naming the holder, with nothing deleted."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

from robustlab.cli import main

HOLD = """
import fcntl, sys, time
f = open(sys.argv[1], "a+")
fcntl.flock(f.fileno(), fcntl.LOCK_EX)
f.write("pid 1 on elsewhere since now: robustlab defend (first)\\n"); f.flush()
print("held", flush=True)
time.sleep(60)
"""


def test_a_second_defend_on_the_same_out_is_refused_and_deletes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "robust.safetensors"
    ckpt = tmp_path / "robust.safetensors.ckpt"
    ckpt.mkdir()
    (ckpt / "epoch-0001.pt").write_bytes(b"the first run's checkpoint")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / ".robust.safetensors.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        t = time.monotonic()
        r = CliRunner().invoke(main, ["defend", "--model", "zoo:digits-cnn", "--data", "digits", "--method", "fast-at", "--epochs", "1",
                                      "--train-limit", "50", "--out", str(out), "--overwrite"])
        assert r.exit_code == 2, r.output
        assert "in use by another run" in r.output and "robustlab defend (first)" in r.output, r.output
        assert (ckpt / "epoch-0001.pt").read_bytes() == b"the first run's checkpoint"
        assert time.monotonic() - t < 30
    finally:
        holder.kill()
        holder.wait()
    # once the first run is gone, --overwrite does what it says
    r = CliRunner().invoke(main, ["defend", "--model", "zoo:digits-cnn", "--data", "digits", "--method", "fast-at", "--epochs", "1",
                                  "--train-limit", "50", "--val-limit", "20", "--out", str(out), "--overwrite"])
    assert r.exit_code == 0, r.output
    assert not (ckpt / "epoch-0001.pt").exists() and out.exists()
