"""Peak resident memory of every check of one run, for tests/test_memory.py (Linux only).

``python rl_memory_probe.py N OUT SUITE`` writes N random CIFAR-shaped images (labelled with the
tiny model's own predictions, so every point is attacked) to ``OUT/data.npz``, runs ``robustlab
evaluate`` with the ``tiny_cifar`` test model in this process, and prints one JSON line:
``{"peaks": {check id: peak RSS in MB while it ran}, "start": {check id: RSS in MB when it
started}, "status": {...}, "card_bytes": size of scorecard.json}``. The peak is reset
(``/proc/self/clear_refs``) when each check starts.
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import rl_test_models  # noqa: E402

from robustlab.checks import CHECKS  # noqa: E402
from robustlab.cli import main  # noqa: E402


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    return 0.0


def _wrap(orig, peaks, starts):
    def run(self, ctx):
        starts[self.id] = round(_status_mb("VmRSS"), 1)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak (VmHWM) to the current RSS
        try:
            return orig(self, ctx)
        finally:
            peaks[self.id] = round(_status_mb("VmHWM"), 1)

    return run


def probe(n: int, out: Path, suite: str) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(1)
    x = (torch.rand((n, 3, 32, 32), generator=g) * 255).round().to(torch.uint8)
    with torch.no_grad():
        y = rl_test_models.tiny_cifar()(x.float() / 255).argmax(1)
    np.savez(out / "data.npz", x=x.numpy(), y=y.numpy())
    del x
    peaks: dict = {}
    starts: dict = {}
    for _name, cls in list(CHECKS.items()):
        cls.run = _wrap(cls.run, peaks, starts)
    try:
        main(["evaluate", "--model", "factory:rl_test_models:tiny_cifar", "--num-classes", "10", "--input-shape", "3,32,32", "--bounds", "0,1",
              "--data", f"npz:{out / 'data.npz'}", "--suite", suite, "--out", str(out / "run"), "--no-mlflow", "--quiet", "--batch-size", "100",
              "--device", "cpu", "--threads", "1"], standalone_mode=False)
    except SystemExit as exc:  # the command ends with its exit code
        if exc.code not in (0, None):
            raise
    card = json.loads((out / "run" / "scorecard.json").read_text())
    return {"peaks": peaks, "start": starts, "status": {c["id"]: c["status"] for c in card["checks"]}, "card_bytes": (out / "run" / "scorecard.json").stat().st_size}


if __name__ == "__main__":
    print(json.dumps(probe(int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])))
