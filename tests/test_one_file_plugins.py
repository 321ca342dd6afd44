"""Adding a plugin inside robustlab is one new file with one decorator, for every kind this test
covers: a new module is dropped into the kind's package (the package's ``__path__`` is extended with a
temporary folder, so nothing in the source tree changes) and the plugin is found and runs end to end
through the CLI. No list, enum, option table or other module is edited."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

#: package -> the one file a contributor would add to it
NEW_FILES = {
    "robustlab.ood": ("neg_max_logit.py", '''
        import torch
        from .base import DETECTORS, Detector

        @DETECTORS.register("neg_max_logit")
        class NegMaxLogit(Detector):
            def __init__(self, *, shift: float = 0.0) -> None:
                super().__init__()
                self.shift = shift

            def score(self, model, x):
                return -model(x).max(dim=1).values + self.shift
    '''),
    "robustlab.corruptions.fast": ("invert.py", '''
        from ..registry import FAST_CORRUPTIONS

        @FAST_CORRUPTIONS.register("invert")
        def invert(x, severity, seeds):
            return (x + severity / 5.0 * (1.0 - 2.0 * x)).clamp(0.0, 1.0)
    '''),
    "robustlab.checks": ("mean_logit.py", '''
        from dataclasses import dataclass
        import torch
        from .base import CHECKS, Check, Params

        @dataclass(frozen=True)
        class MeanLogitParams(Params):
            scale: float = 1.0

        @CHECKS.register("mean_logit")
        class MeanLogit(Check):
            name, family, Params = "mean_logit", "mean_logit", MeanLogitParams

            def run(self, ctx):
                res = self.new_result()
                with torch.no_grad():
                    res.add_metric("mean_logit/value", float(ctx.model(ctx.data.images().to(ctx.device)).mean()) * self.params.scale)
                return res
    '''),
    "robustlab.defenses": ("plain_ce.py", '''
        from dataclasses import dataclass, field
        import torch.nn.functional as F
        from .base import DEFENSES, DefenseMethod, DefenseParams, LossOutput, ValMetric

        @dataclass(frozen=True)
        class PlainParams(DefenseParams):
            temperature: float = field(default=1.0, metadata={"help": "Logit temperature."})
            sigma: float = 0.1

        @DEFENSES.register("plain-ce")
        class PlainCE(DefenseMethod):
            name, Params, val_metric = "plain-ce", PlainParams, ValMetric.NOISE

            def loss(self, model, x, y, *, seeds, bounds):
                logits = model(x)
                return LossOutput(F.cross_entropy(logits / self.params.temperature, y), logits.detach(), {})
    '''),
    "robustlab.data": ("first_digits.py", '''
        from .plugins import data_source, load_dataset

        @data_source("first-digits", "the first N digits", needs_arg=True)
        def first_digits(arg, *, split, root=None, download=False):
            return load_dataset("digits", split=split).limit(int(arg))
    '''),
    "robustlab.models": ("digits_alias.py", '''
        from .loaders import _zoo, model_loader

        @model_loader("alias", "alias:NAME, another name for zoo:NAME")
        def alias(arg, opts):
            return _zoo(arg, opts)
    '''),
    "robustlab.gates": ("mean_logit_protocol.py", '''
        from .protocols import GATE_PROTOCOLS

        @GATE_PROTOCOLS.register("mean_logit")
        def mean_logit_protocol(card):
            return {c.id: f"scale {c.params.get('scale')}" for c in card.checks if c.check == "mean_logit"}
    '''),
}

DRIVER = """
import importlib, sys
for pkg, folder in zip(sys.argv[1].split(","), sys.argv[2].split(",")):
    importlib.import_module(pkg).__path__.append(folder)
from robustlab.cli import main
sys.argv = ["robustlab", *sys.argv[3:]]
main()
"""


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    folders = []
    for pkg, (fname, code) in NEW_FILES.items():
        d = tmp_path / "added" / pkg.replace(".", "_")
        d.mkdir(parents=True, exist_ok=True)
        (d / fname).write_text(textwrap.dedent(code))
        folders.append(str(d))
    return subprocess.run([sys.executable, "-c", DRIVER, ",".join(NEW_FILES), ",".join(folders), *args], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "")})


@pytest.mark.slow
def test_one_new_file_per_kind_runs_end_to_end(tmp_path: Path) -> None:
    suite = tmp_path / "s.yaml"
    suite.write_text(
        "checks:\n"
        "  - check: corruption\n    params: {corruptions: [invert], severities: [5], baseline: none}\n"
        "  - check: ood\n    params: {detectors: [{name: neg_max_logit, shift: 1.0}], near: ['noise:gaussian'], far: ['noise:uniform'], val_limit: 40, ood_limit: 40, synthetic_n: 40}\n"
        "  - check: mean_logit\n    params: {scale: 2.0}\n"
    )
    r = _run(tmp_path, "evaluate", "--model", "alias:digits-cnn", "--data", "first-digits:60", "--suite", str(suite), "--out", str(tmp_path / "a"), "--no-mlflow", "--quiet")
    assert r.returncode == 0, r.stderr[-3000:]
    card = json.loads((tmp_path / "a" / "scorecard.json").read_text())
    keys = [k for c in card["checks"] for k in c["metrics"]]
    assert any("invert" in k for k in keys) and any("neg_max_logit" in k for k in keys) and "mean_logit/value" in keys, keys
    for c in card["checks"]:
        if c["check"] == "mean_logit":
            c["params"]["scale"] = 3.0
    (tmp_path / "b.json").write_text(json.dumps(card))
    r = _run(tmp_path, "compare", str(tmp_path / "a" / "scorecard.json"), str(tmp_path / "b.json"))
    assert r.returncode == 2 and "mean_logit mean_logit: scale 2.0 vs scale 3.0" in r.stderr, r.stderr
    help_text = _run(tmp_path, "defend", "--help").stdout
    assert "plain-ce" in help_text and "--temperature" in help_text, help_text
    out = tmp_path / "m.safetensors"
    r = _run(tmp_path, "defend", "--model", "alias:digits-cnn", "--data", "digits", "--method", "plain-ce", "--temperature", "2", "--epochs", "1",
             "--train-limit", "64", "--val-limit", "32", "--no-mlflow", "--quiet", "--out", str(out))
    assert r.returncode == 0 and out.is_file(), r.stderr[-3000:]
