"""The golden runs shared by tests/test_golden.py and scripts/make_golden.py."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).resolve().parent / "golden"


def shared_npz() -> Path | None:
    env = os.environ.get("ROBUSTLAB_SHARED_DATA")
    base = Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"
    p = base / "cifar10_test_1000.npz"
    return p if p.is_file() else None


@dataclass(frozen=True)
class Case:
    model: str
    suite: str
    needs_cifar: bool = False
    limit: int | None = None

    def command(self, out: Path, npz: Path | None) -> list[str]:
        cmd = ["evaluate", "--model", self.model, "--suite", self.suite, "--out", str(out), "--seed", "0", "--no-mlflow", "--quiet"]
        if self.needs_cifar:
            assert npz is not None
            cmd += ["--data", f"npz:{npz}"]
        if self.limit is not None:
            cmd += ["--limit", str(self.limit)]
        return cmd


def cold_cache_env(folder: Path) -> dict[str, str]:
    """The environment of a golden run: an empty robustlab cache in ``folder``, so fitted OOD detectors are
    always fitted in the run, whatever other runs on the machine left cached."""
    return {**os.environ, "ROBUSTLAB_CACHE": str(folder), "MLFLOW_DISABLE_TELEMETRY": "true"}


CASES: dict[str, Case] = {
    "quick": Case("zoo:digits-cnn", "quick"),
    "standard": Case("zoo:digits-cnn", "standard", limit=120),  # 120 of the 360 test digits keeps CI within its budget
    "cifar": Case("zoo:cifar10-resnet18", str(GOLDEN / "cifar_mix.yaml"), needs_cifar=True, limit=64),
}


def normalise(card: dict[str, Any]) -> dict[str, Any]:
    """:func:`strip_volatile`, then every metric key mapped to the current key grammar."""
    card = strip_volatile(card)
    card.pop("schema_version", None)  # the key grammar's version bump (issue 15) is the one allowed change
    names = card.get("model", {}).get("class_names") or card.get("data", {}).get("classes")
    card["checks"] = [_upgrade_keys(c, names) for c in card["checks"]]
    return card


def strip_volatile(card: dict[str, Any]) -> dict[str, Any]:
    """Drop what legitimately differs between two runs of the same evaluation: timings, dates, the
    command line, file locations, the tool version, the environment and the signature."""
    card = dict(card)
    for k in ("timings", "environment", "signature"):
        card.pop(k, None)
    card["tool"] = {k: v for k, v in card.get("tool", {}).items() if k != "version"}
    card["run"] = {k: v for k, v in card.get("run", {}).items() if k not in ("started", "finished", "command")}
    card["model"] = {k: v for k, v in card.get("model", {}).items() if k != "path"}
    data = dict(card.get("data", {}))
    spec = str(data.get("spec", ""))
    if spec.startswith("npz:"):
        data["spec"] = "npz:" + Path(spec[4:]).name
    card["data"] = data
    # Data specs also appear inside notes and protocol texts ('fit data: npz:/work/.../x.npz'): a
    # checkout at another path (CI uses /check/work/...) must not differ from the golden run.
    card["checks"] = _without_folders(card.get("checks", []))
    suite = dict(card.get("suite", {}))
    if "source" in suite and ("/" in str(suite["source"]) or os.sep in str(suite["source"])):
        suite["source"] = Path(str(suite["source"])).name
    card["suite"] = suite
    card["checks"] = [{k: v for k, v in c.items() if k != "seconds"} for c in card.get("checks", [])]
    return card


_SPEC_FOLDER = re.compile(r"\b(npz|folder|imagefolder|cifar10|file):(?:/[^\s/,;()'\"]+)+/(?=[^/\s])")


def _without_folders(obj: Any) -> Any:
    """'npz:/any/where/x.npz' becomes 'npz:x.npz' in every string: the file name stays compared."""
    if isinstance(obj, dict):
        return {k: _without_folders(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_without_folders(v) for v in obj]
    if isinstance(obj, str):
        return _SPEC_FOLDER.sub(r"\1:", obj)
    return obj


def _upgrade_keys(obj: Any, names: list[str] | None) -> Any:
    """Map every schema-1 metric key inside a check (dict keys and key-like strings) to the current
    grammar, on both sides of the comparison: the key format changed on purpose (issue 15), the
    numbers must not."""
    from robustlab.metric_keys import upgrade_v1_key

    if isinstance(obj, dict):
        return {(upgrade_v1_key(k, names) if isinstance(k, str) else k): _upgrade_keys(v, names) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_upgrade_keys(v, names) for v in obj]
    if isinstance(obj, str) and ("=" in obj or "@" in obj) and " " not in obj:
        return upgrade_v1_key(obj, names)
    return obj


#: Floating-point tolerance of a comparison with a stored scorecard. Different CPUs (and batch sizes
#: on some of them) pick different convolution kernels, whose float32 results differ in the last
#: bits: per-sample scores by up to a few 1e-6 relative, per-sample values rounded to 6 decimals by one
#: unit of the last place. A flipped prediction (1/64 or 1/360 of an accuracy) still fails.
REL = 1e-5
ABS = 1.5e-6
#: Ranking metrics (AUROC, AUPR, FPR at a TPR) move by one swapped pair when two scores that differ
#: by float noise change order: 1 / (n_in * n_out), 4e-4 with 64 x 40 images. The per-sample scores
#: behind them are still compared at REL, so a changed detector fails there.
RANK_ABS = 1e-3
RANK_KEYS = ("auroc", "aupr", "fpr")


def diff_cards(a: Any, b: Any, path: str, out: list[str]) -> None:
    """Append to ``out`` every difference between two normalised scorecards (at most 20)."""
    import math

    if len(out) >= 20:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                out.append(f"{path}/{k}: only in {'golden' if k in a else 'new run'}")
            else:
                diff_cards(a[k], b[k], f"{path}/{k}", out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{path}: length {len(a)} (golden) != {len(b)} (new run)")
        for i, (u, v) in enumerate(zip(a, b)):
            diff_cards(u, v, f"{path}[{i}]", out)
    elif isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
        last = path.rsplit("/", 1)[-1]
        abs_tol = RANK_ABS if "/metrics/" in path and any(k in last for k in RANK_KEYS) else ABS
        if not math.isclose(float(a), float(b), rel_tol=REL, abs_tol=abs_tol):
            out.append(f"{path}: {a!r} (golden) != {b!r} (new run)")
    elif a != b:
        out.append(f"{path}: {str(a)[:80]!r} (golden) != {str(b)[:80]!r} (new run)")
