"""Issue 13, part 4: a table of hostile and malformed inputs through the real CLI.

Every case runs the console script's entry point (``robustlab.cli:main`` reading ``sys.argv``) in
its own forked process (``tests/corpus_driver.py``), with real file descriptors for stdout/stderr.
Each must end with the documented exit code (2 for an input error unless the table says otherwise),
exactly one line on stderr without a traceback, no code executed (pickled payloads would create a
marker file) and the outputs of an earlier run byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent
CLEAN = str(HERE / "suites" / "clean.yaml")
DRIVER = str(HERE / "corpus_driver.py")
PRIOR = "{prior}"  # replaced by the driver's folder of earlier outputs


@dataclass
class Case:
    name: str
    category: str
    args: list[str]
    code: int = 2
    stderr_lines: int = 1
    env: dict[str, str] = field(default_factory=dict)
    setup: str = ""  # shell lines run before the case (in the file-system namespace: mounts)
    inspect: list[str] = field(default_factory=list)  # folders whose files are hashed right after the case
    namespace: bool = False  # runs in the user+mount namespace with the read-only and full file systems


class Payload:
    """Unpickling this creates the marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _ev(*args: str, out: str = PRIOR) -> list[str]:
    """``evaluate`` with the corpus defaults first, so that a case's own --suite/--device wins (click keeps the last)."""
    return ["evaluate", "--suite", CLEAN, "--device", "cpu", "--out", out, "--no-mlflow", "--quiet", "--no-report", *args]


def _digits_ev(*args: str, out: str = PRIOR) -> list[str]:
    return _ev("--model", "zoo:digits-cnn", "--data", "digits", "--limit", "20", *args, out=out)


def _safetensors(path: Path, meta: dict[str, str] | None) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    from robustlab.models.zoo import ZOO

    src = ZOO["digits-cnn"].locate()
    with safe_open(str(src), framework="pt") as f:
        sd = {k: f.get_tensor(k) for k in f.keys()}
    save_file(sd, str(path), metadata=meta)
    return path


def _npz(path: Path, **arrays) -> Path:
    with open(path, "wb") as f:
        np.savez(f, **arrays)
    return path


def build_corpus(d: Path, marker: Path) -> list[Case]:
    import torch

    cases: list[Case] = []
    add = cases.append
    m = d / "models"
    m.mkdir()
    good_meta = {"num_classes": 10, "input_shape": [1, 8, 8], "bounds": [0.0, 1.0], "dataset": "digits"}

    # -- A. model files: pickles with a payload under every extension, never executed -----------
    for ext in (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".safetensors", ".pt2", ".ts", ".json", ""):
        p = m / f"evil{ext or '_noext'}"
        p.write_bytes(pickle.dumps(Payload(marker)))
        add(Case(f"pickle payload {ext or 'no extension'}", "model", _ev("--model", str(p), "--data", "digits")))
    p = m / "evil_zip.pt"
    torch.save({"weights": torch.zeros(2), "evil": Payload(marker)}, str(p))
    add(Case("torch zip with payload", "model", _ev("--model", str(p), "--data", "digits")))
    for prefix in ("pickle", "torchscript", "export", "state-dict"):
        add(Case(f"{prefix}: payload without --trust-code", "model", _ev("--model", f"{prefix}:{m / 'evil.pt'}", "--data", "digits")))
    zp = m / "fake_ts.pt"
    with zipfile.ZipFile(zp, "w") as z:
        z.writestr("archive/code/__torch__.py", "import os")
        z.writestr("archive/constants.pkl", pickle.dumps(Payload(marker)))
    add(Case("fake TorchScript archive", "model", _ev("--model", str(zp), "--data", "digits")))
    # junk files
    for name, data in [("random.pt", os.urandom(4096)), ("empty.pt", b""), ("text.pth", b"hello world\n" * 10), ("random.safetensors", os.urandom(2048)),
                       ("empty.safetensors", b""), ("zip_junk.pt", b"PK\x03\x04" + os.urandom(500)), ("huge_header.safetensors", (10**12).to_bytes(8, "little") + b"{}")]:
        p = m / name
        p.write_bytes(data)
        add(Case(f"junk model file {name}", "model", _ev("--model", str(p), "--data", "digits")))
    good = _safetensors(m / "good.safetensors", {"robustlab": json.dumps({**good_meta, "architecture": "zoo-arch:digits-cnn"})})
    trunc = m / "truncated.safetensors"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    add(Case("truncated safetensors", "model", _ev("--model", str(trunc), "--data", "digits")))
    from safetensors.torch import load_file

    sd_pt = m / "state.pt"
    torch.save(load_file(str(good)), str(sd_pt))
    tp = m / "truncated.pt"
    tp.write_bytes(sd_pt.read_bytes()[:300])
    add(Case("truncated torch checkpoint", "model", _ev("--model", str(tp), "--data", "digits")))
    add(Case("state dict without --arch", "model", _ev("--model", str(sd_pt), "--data", "digits")))
    add(Case("state dict with the wrong --arch", "model", _ev("--model", str(sd_pt), "--arch", "zoo-arch:cifar-resnet18", "--data", "digits")))
    add(Case("unknown --arch prefix", "model", _ev("--model", str(sd_pt), "--arch", "bogus:thing", "--data", "digits")))
    add(Case("unknown zoo-arch", "model", _ev("--model", str(sd_pt), "--arch", "zoo-arch:nope", "--data", "digits")))
    # metadata in the safetensors header
    bad_meta = {
        "header not JSON": "{not json",
        "header a list": json.dumps([1, 2, 3]),
        "header a string": json.dumps("digits"),
        "num_classes string": json.dumps({**good_meta, "num_classes": "10", "architecture": "zoo-arch:digits-cnn"}),
        "num_classes negative": json.dumps({**good_meta, "num_classes": -3, "architecture": "zoo-arch:digits-cnn"}),
        "num_classes bool": json.dumps({**good_meta, "num_classes": True, "architecture": "zoo-arch:digits-cnn"}),
        "mean string": json.dumps({**good_meta, "mean": "0.5", "architecture": "zoo-arch:digits-cnn"}),
        "mean strings": json.dumps({**good_meta, "mean": ["a"], "architecture": "zoo-arch:digits-cnn"}),
        "mean NaN": '{"mean": [NaN], "architecture": "zoo-arch:digits-cnn"}',
        "std zero": json.dumps({**good_meta, "std": [0.0], "architecture": "zoo-arch:digits-cnn"}),
        "std negative": json.dumps({**good_meta, "std": [-1.0], "architecture": "zoo-arch:digits-cnn"}),
        "mean 3 channels on 1": json.dumps({**good_meta, "mean": [0.5, 0.5, 0.5], "architecture": "zoo-arch:digits-cnn"}),
        "bounds reversed": json.dumps({**good_meta, "bounds": [1, 0], "architecture": "zoo-arch:digits-cnn"}),
        "bounds one value": json.dumps({**good_meta, "bounds": [1], "architecture": "zoo-arch:digits-cnn"}),
        "bounds a mapping": json.dumps({**good_meta, "bounds": {"lo": 0}, "architecture": "zoo-arch:digits-cnn"}),
        "input_shape 2 values": json.dumps({**good_meta, "input_shape": [8, 8], "architecture": "zoo-arch:digits-cnn"}),
        "input_shape zero": json.dumps({**good_meta, "input_shape": [0, 8, 8], "architecture": "zoo-arch:digits-cnn"}),
        "class_names duplicated": json.dumps({**good_meta, "class_names": ["a"] * 10, "architecture": "zoo-arch:digits-cnn"}),
        "class_names wrong count": json.dumps({**good_meta, "class_names": ["a", "b"], "architecture": "zoo-arch:digits-cnn"}),
        "class_names not strings": json.dumps({**good_meta, "class_names": list(range(10)), "architecture": "zoo-arch:digits-cnn"}),
        "architecture factory": json.dumps({**good_meta, "architecture": f"factory:{__name__}:Payload"}),
        "architecture os.system": json.dumps({**good_meta, "architecture": "factory:os:system"}),
        "architecture a list": json.dumps({**good_meta, "architecture": ["zoo-arch:digits-cnn"]}),
        "architecture unknown": json.dumps({**good_meta, "architecture": "zoo-arch:nope"}),
        "dataset a number": json.dumps({**good_meta, "dataset": 5, "architecture": "zoo-arch:digits-cnn"}),
    }
    for i, (name, text) in enumerate(bad_meta.items()):
        p = _safetensors(m / f"meta{i}.safetensors", {"robustlab": text})
        add(Case(f"safetensors header: {name}", "model metadata", _ev("--model", str(p), "--data", "digits")))
    # sidecars (<stem>.json and robustlab.json)
    sidecars = {
        "not JSON": b"{oops", "a list": b"[1, 2]", "num_classes string": json.dumps({"num_classes": "10"}).encode(),
        "mean string": json.dumps({"mean": "0.5"}).encode(), "factory": json.dumps({"architecture": "factory:os:system"}).encode(),
        "non-UTF-8": b'{"dataset": "\xff\xfe"}', "NaN": b'{"std": [NaN]}', "deep": b"[" * 100000 + b"]" * 100000,
    }
    for i, (name, data) in enumerate(sidecars.items()):
        sub = m / f"side{i}"
        sub.mkdir()
        w = shutil.copy(sd_pt, sub / "w.pt")
        (sub / "w.json").write_bytes(data)
        arch = [] if name == "factory" else ["--arch", "zoo-arch:digits-cnn"]  # with --arch the user's choice wins over the file's
        add(Case(f"sidecar <stem>.json {name}", "model metadata", _ev("--model", str(w), *arch, "--data", "digits")))
        sub2 = m / f"rside{i}"
        sub2.mkdir()
        w2 = shutil.copy(sd_pt, sub2 / "w.pt")
        (sub2 / "robustlab.json").write_bytes(data)
        add(Case(f"sidecar robustlab.json {name}", "model metadata", _ev("--model", str(w2), *arch, "--data", "digits")))
    # model specs
    for name, spec in [("missing file", str(m / "nope.pt")), ("a folder", str(m)), ("unknown prefix", "zoooo:digits-cnn"), ("unknown zoo model", "zoo:nope"),
                       ("factory module missing", "factory:no_such_module_xyz:build"), ("factory without function", "factory:os"),
                       ("factory not a module", "factory:json:dumps"), ("empty spec", ""), ("torchvision unknown", "torchvision:no_such_net")]:
        add(Case(f"model spec: {name}", "model", _ev("--model", spec, "--data", "digits")))

    # -- B. options --------------------------------------------------------------------------------
    for name, extra in [
        ("--num-classes -3", ["--num-classes", "-3"]), ("--num-classes 0", ["--num-classes", "0"]), ("--num-classes abc", ["--num-classes", "abc"]),
        ("--num-classes 3 (labels beyond)", ["--num-classes", "3", "--arch", "zoo-arch:digits-cnn"]),
        ("--bounds 0,1/0", ["--bounds", "0,1/0"]), ("--bounds 1,0", ["--bounds", "1,0"]), ("--bounds a,b", ["--bounds", "a,b"]), ("--bounds 0", ["--bounds", "0"]),
        ("--bounds nan,1", ["--bounds", "nan,1"]), ("--bounds 0,inf", ["--bounds", "0,inf"]), ("--bounds 0,1e999", ["--bounds", "0,1e999"]),
        ("3-channel --mean on a 1-channel model", ["--mean", "0.5,0.5,0.5"]), ("--mean abc", ["--mean", "abc"]), ("--mean empty", ["--mean", ","]),
        ("--std 0", ["--std", "0"]), ("--std -1", ["--std", "-1"]), ("--mean 3 / --std 2", ["--mean", "0.5,0.5,0.5", "--std", "0.2,0.2"]),
        ("--device bogus", ["--device", "bogus"]), ("--device cuda:99", ["--device", "cuda:99"]), ("--device cpu:abc", ["--device", "cpu:abc"]),
        ("--input-shape 3,32", ["--input-shape", "3,32"]), ("--input-shape 0,8,8", ["--input-shape", "0,8,8"]), ("--input-shape a,b,c", ["--input-shape", "a,b,c"]),
        ("--input-shape 1.5,8,8", ["--input-shape", "1.5,8,8"]), ("--input-shape 3,32,32 (data 1x8x8)", ["--input-shape", "3,32,32"]),
        ("--batch-size 0", ["--batch-size", "0"]), ("--batch-size -1", ["--batch-size", "-1"]), ("--limit 0", ["--limit", "0"]), ("--limit -5", ["--limit", "-5"]),
        ("--seed abc", ["--seed", "abc"]), ("--threads 0", ["--threads", "0"]), ("--precision fp8", ["--precision", "fp8"]),
        ("--class-names duplicated", ["--class-names", "a,a,b,c,d,e,f,g,h,i"]), ("--class-names wrong count", ["--class-names", "a,b"]),
        ("--class-names empty name", ["--class-names", "a,,b,c,d,e,f,g,h,i"]), ("unknown option", ["--frobnicate"]),
        ("--policy missing", ["--policy", str(d / "nope.yaml")]), ("--feature-layer missing", ["--feature-layer", "no.such.layer"]),
        ("--resume with nothing stored and changed seed", ["--seed", "99", "--resume"]),
    ]:
        add(Case(f"option {name}", "options", _digits_ev(*extra)))
    add(Case("missing --model", "options", ["evaluate", "--data", "digits", "--no-mlflow", "--out", PRIOR]))
    add(Case("unknown command", "options", ["evaluat"]))
    add(Case("unknown data spec", "options", _ev("--model", "zoo:digits-cnn", "--data", "digitz")))
    add(Case("data spec without argument", "options", _ev("--model", "zoo:digits-cnn", "--data", "npz:")))
    add(Case("data spec is a bare path", "options", _ev("--model", "zoo:digits-cnn", "--data", str(d))))

    # -- C. data -----------------------------------------------------------------------------------
    data = d / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    x8 = rng.random((12, 8, 8)).astype(np.float32)
    y8 = np.arange(12) % 10
    npzs = {
        "object x": dict(x=np.array([object()] * 12, dtype=object), y=y8),
        "string x": dict(x=np.array(["a"] * 12), y=y8), "string y": dict(x=x8, y=np.array(["1"] * 12)),
        "float labels": dict(x=x8, y=y8.astype(np.float64) + 0.5), "whole float labels": dict(x=x8, y=y8.astype(np.float32)),
        "bool labels": dict(x=x8, y=y8 > 3), "complex x": dict(x=x8.astype(np.complex64), y=y8), "bool x": dict(x=x8 > 0.5, y=y8),
        "missing y": dict(x=x8), "missing x": dict(y=y8), "y too short": dict(x=x8, y=y8[:5]), "x 5-D": dict(x=x8[:, None, None], y=y8),
        "x 2-D": dict(x=x8.reshape(12, 64), y=y8), "NaN pixels": dict(x=np.full_like(x8, np.nan), y=y8), "pixels 0..1000": dict(x=x8 * 1000, y=y8),
        "negative labels": dict(x=x8, y=-y8 - 1), "labels beyond classes": dict(x=x8, y=y8 + 50), "one-hot labels": dict(x=x8, y=np.eye(10)[y8]),
        "duplicate ids": dict(x=x8, y=y8, ids=np.array(["same"] * 12)), "duplicate class names": dict(x=x8, y=y8, classes=np.array(["c"] * 10)),
        "object ids": dict(x=x8, y=y8, ids=np.array([object()] * 12, dtype=object)), "empty": dict(x=x8[:0], y=y8[:0]),
        "RGB on a grey model": dict(x=rng.random((12, 8, 8, 3)).astype(np.float32), y=y8), "wrong size": dict(x=rng.random((12, 16, 16)).astype(np.float32), y=y8),
        "int64 pixels 0..255 > 1": dict(x=(x8 * 255).astype(np.int64), y=y8), "float128 x": dict(x=x8.astype(np.longdouble), y=y8),
    }
    for i, (name, arrays) in enumerate(npzs.items()):
        p = _npz(data / f"d{i}.npz", **arrays)
        add(Case(f"npz: {name}", "data", _ev("--model", "zoo:digits-cnn", "--data", f"npz:{p}")))
    np.save(data / "bare.npy", x8)
    shutil.copy(data / "bare.npy", data / "bare_as.npz")
    (data / "corrupt.npz").write_bytes(b"PK\x03\x04" + os.urandom(300))
    (data / "text.npz").write_text("x,y\n1,2\n")
    (data / "empty.npz").write_bytes(b"")
    good_npz = _npz(data / "good.npz", x=x8, y=y8).read_bytes()
    (data / "trunc.npz").write_bytes(good_npz[: len(good_npz) // 2])
    for name in ("bare.npy", "bare_as.npz", "corrupt.npz", "text.npz", "empty.npz", "trunc.npz", "missing.npz"):
        add(Case(f"npz file: {name}", "data", _ev("--model", "zoo:digits-cnn", "--data", f"npz:{data / name}")))
    add(Case("npz: a folder", "data", _ev("--model", "zoo:digits-cnn", "--data", f"npz:{data}")))
    f0 = data / "folder_none"
    f0.mkdir()
    add(Case("folder: no class folders", "data", _ev("--model", "zoo:digits-cnn", "--data", f"folder:{f0}")))
    f1 = data / "folder_noimg" / "cat"
    f1.mkdir(parents=True)
    (f1 / "readme.txt").write_text("x")
    add(Case("folder: no images", "data", _ev("--model", "zoo:digits-cnn", "--data", f"folder:{f1.parent}")))
    f2 = data / "folder_bad" / "cat"
    f2.mkdir(parents=True)
    (f2 / "a.png").write_bytes(os.urandom(200))
    add(Case("folder: corrupt image", "data", _ev("--model", "zoo:digits-cnn", "--data", f"folder:{f2.parent}")))
    add(Case("folder: missing", "data", _ev("--model", "zoo:digits-cnn", "--data", f"folder:{data / 'nope'}")))
    add(Case("torchvision set not downloaded", "data", _ev("--model", "zoo:digits-cnn", "--data", "mnist", "--data-root", str(data / "nothing"))))

    # -- D. suites ---------------------------------------------------------------------------------
    s = d / "suites"
    s.mkdir()
    suites = {
        "epsilons 1/0": "checks:\n  - check: pgd\n    params: {epsilons: ['1/0']}\n",
        "epsilons nan": "checks:\n  - check: pgd\n    params: {epsilons: [.nan]}\n",
        "epsilons text": "checks:\n  - check: pgd\n    params: {epsilons: [abc]}\n",
        "steps string": "checks:\n  - check: pgd\n    params: {steps: ten}\n",
        "not YAML": "checks: [\n", "a list": "- clean\n", "empty": "", "empty checks": "checks: []\n",
        "python tag": "checks: !!python/object/apply:os.system ['touch x']\n", "unknown check": "checks:\n  - check: nonsense\n",
        "unknown key": "checks: [clean]\nbogus: 1\n", "entry unknown key": "checks:\n  - check: clean\n    param: {}\n",
        "duplicate id": "checks: [clean, clean]\n", "params a list": "checks:\n  - check: clean\n    params: [1]\n",
        "deep nesting": "checks: " + "[" * 5000 + "]" * 5000 + "\n", "entry a number": "checks: [5]\n",
    }
    for i, (name, text) in enumerate(suites.items()):
        p = s / f"s{i}.yaml"
        p.write_text(text)
        add(Case(f"suite: {name}", "suite", _digits_ev("--suite", str(p))))
    (s / "latin1.yaml").write_bytes("name: caf\xe9\nchecks: [clean]\n".encode("latin-1"))
    (s / "binary.yaml").write_bytes(os.urandom(300))
    for name in ("latin1.yaml", "binary.yaml", "missing.yaml"):
        add(Case(f"suite file: {name}", "suite", _digits_ev("--suite", str(s / name))))
    add(Case("suite: a folder", "suite", _digits_ev("--suite", str(s) + "/")))
    add(Case("suite: unknown name", "suite", _digits_ev("--suite", "quik")))

    # -- E. output ---------------------------------------------------------------------------------
    o = d / "outs"
    o.mkdir()
    (o / "afile").write_text("x")
    add(Case("--out is a file", "output", _digits_ev(out=str(o / "afile"))))
    add(Case("--out under a file", "output", _digits_ev(out=str(o / "afile" / "sub"))))
    add(Case("--out under /dev/null", "output", _digits_ev(out="/dev/null/out")))
    add(Case("--out name too long", "output", _digits_ev(out=str(o / ("x" * 300)))))
    add(Case("--out in /proc", "output", _digits_ev(out="/proc/robustlab-out")))
    cor = o / "corrupt_store"
    cor.mkdir()
    (cor / "results.sqlite").write_bytes(b"garbage" * 300)
    add(Case("corrupt results.sqlite with --resume", "output", _digits_ev("--resume", out=str(cor))))
    add(Case("--junit in a folder that is a file", "output", _digits_ev("--policy", str(HERE.parent / "reports" / "example-policy.yaml"), "--junit", str(o / "afile" / "j.xml"))))

    cases.extend(non_utf8_cases(d))

    # -- F. scorecard commands ------------------------------------------------------------------------
    sc = d / "cards"
    sc.mkdir()
    from test_report_cards import make_card

    good_card = json.loads(make_card().to_json())
    card_edits = {
        "NaN": lambda t: t.replace('"schema_version"', '"x": NaN, "schema_version"', 1),
        "Infinity": lambda t: t.replace('"schema_version"', '"x": -Infinity, "schema_version"', 1),
        "duplicate key": lambda t: t.replace('"schema_version"', '"schema_version": "0", "schema_version"', 1),
        "lone surrogate": lambda t: t.replace('"schema_version"', '"x": "\\udc80", "schema_version"', 1),
        "not JSON": lambda t: t[: len(t) // 2], "empty": lambda t: "", "a list": lambda t: "[1, 2]", "a number": lambda t: "3",
        "deep nesting": lambda t: "[" * 100000 + "]" * 100000,
    }
    field_edits = {
        "metric a string": lambda c: c["checks"][0]["metrics"].update({"clean/accuracy": "0.9"}),
        "metric a bool": lambda c: c["checks"][0]["metrics"].update({"clean/accuracy": True}),
        "metrics a list": lambda c: c["checks"][0].update({"metrics": [0.9]}),
        "checks a string": lambda c: c.update({"checks": "clean"}), "check a list": lambda c: c.update({"checks": [[1]]}),
        "status unknown": lambda c: c["checks"][0].update({"status": "great"}), "model a list": lambda c: c.update({"model": [1]}),
        "run a string": lambda c: c.update({"run": "x"}), "interval strings": lambda c: c["checks"][0].update({"intervals": {"clean/accuracy": {"low": "a", "high": "b"}}}),
        "interval extra key": lambda c: c["checks"][0].update({"intervals": {"clean/accuracy": {"low": 0, "high": 1, "evil": 2}}}),
        "audit bad verdict": lambda c: c["checks"][0].update({"audit": [{"name": "a", "verdict": "meh", "message": ""}]}),
        "counts strings": lambda c: c["checks"][0].update({"counts": {"clean/accuracy": "many"}}),
        "series not lists": lambda c: c["checks"][0].update({"series": {"s": {"x": 1, "y": 2}}}),
        "signature a string": lambda c: c.update({"signature": "trust me"}),
        "id missing": lambda c: c["checks"][0].pop("id"),
    }
    paths: dict[str, Path] = {}
    base_text = json.dumps(good_card, indent=1)
    for i, (name, fn) in enumerate(card_edits.items()):
        p = sc / f"t{i}.json"
        p.write_text(fn(base_text), encoding="utf-8", errors="surrogatepass")
        paths[name] = p
    for i, (name, fn) in enumerate(field_edits.items()):
        c = json.loads(base_text)
        fn(c)
        p = sc / f"f{i}.json"
        p.write_text(json.dumps(c))
        paths[name] = p
    (sc / "latin1.json").write_bytes(base_text.replace('"standard"', '"caf\xe9"').encode("latin-1"))
    paths["non-UTF-8"] = sc / "latin1.json"
    paths["missing"] = sc / "missing.json"
    pol = HERE.parent / "reports" / "example-policy.yaml"
    for name, p in paths.items():
        add(Case(f"report: {name}", "scorecard", ["report", str(p), "-o", str(d / "r.html")]))
        add(Case(f"verify: {name}", "scorecard", ["verify", str(p)]))
    for name in ("NaN", "duplicate key", "metric a string", "checks a string", "not JSON", "status unknown"):
        add(Case(f"gate: {name}", "scorecard", ["gate", str(paths[name]), "--policy", str(pol)]))
        add(Case(f"compare: {name}", "scorecard", ["compare", str(paths[name]), str(paths[name])]))
        add(Case(f"sign: {name}", "scorecard", ["sign", str(paths[name]), "--generate-key", str(d / f"k_{abs(hash(name))}.pem")]))
    ok_card = sc / "ok.json"
    ok_card.write_text(base_text)
    keys = d / "keys"
    keys.mkdir()
    (keys / "garbage.pem").write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    add(Case("verify: garbage public key", "scorecard", ["verify", str(ok_card), "--public-key", str(keys / "garbage.pem")]))
    add(Case("sign: garbage private key", "scorecard", ["sign", str(ok_card), "--key", str(keys / "garbage.pem")]))
    add(Case("verify: unsigned scorecard", "scorecard", ["verify", str(ok_card)], code=1, stderr_lines=0))
    policies = {
        "unknown key": "rules: []\nbogus: 1\n", "bad op": "rules:\n  - {metric: clean/accuracy, op: '>>', threshold: 1}\n",
        "threshold string": "rules:\n  - {metric: clean/accuracy, op: '>=', threshold: high}\n", "python tag": "rules: !!python/object/apply:os.system ['x']\n",
        "not YAML": "rules: [\n", "if_missing bogus": "rules:\n  - {metric: m, op: '>=', threshold: 1, if_missing: maybe}\n",
        "incomplete bogus": "checks: {incomplete: sometimes}\nrules: []\n", "threshold NaN": "rules:\n  - {metric: m, op: '>=', threshold: .nan}\n",
    }
    for i, (name, text) in enumerate(policies.items()):
        p = d / f"policy{i}.yaml"
        p.write_text(text)
        add(Case(f"gate policy: {name}", "scorecard", ["gate", str(ok_card), "--policy", str(p)]))
        add(Case(f"evaluate --policy: {name}", "scorecard", _digits_ev("--policy", str(p))))
    return cases


def _u(path: Path | str, name: bytes) -> str:
    """``path/name`` with the non-UTF-8 bytes of ``name`` as Python passes them in argv (surrogate-escaped)."""
    return os.fsdecode(os.path.join(os.fsencode(str(path)), name))


def non_utf8_cases(d: Path) -> list[Case]:
    """Paths with bytes that are not UTF-8 (b"\\xff"): existing files work, missing ones exit 2."""
    nu = _u(d, b"nonutf8-\xff")
    os.makedirs(nu)
    from robustlab.models.zoo import ZOO

    shutil.copy(ZOO["digits-cnn"].locate(), _u(nu, b"m\xfe.safetensors"))
    shutil.copy(CLEAN, _u(nu, b"s\xfe.yaml"))
    rng = np.random.default_rng(1)
    _npz(Path(_u(nu, b"d\xfe.npz")), x=rng.random((12, 8, 8)).astype(np.float32), y=np.arange(12) % 10)
    pol = str(HERE.parent / "reports" / "example-policy.yaml")
    shutil.copy(pol, _u(nu, b"p\xfe.yaml"))
    cards = [_u(nu, b"out-\xff-%d/scorecard.json" % i) for i in range(3)]
    c: list[Case] = []
    ok = dict(code=0, stderr_lines=0)
    c.append(Case("non-UTF-8 --out", "non-UTF-8 path", _digits_ev(out=_u(nu, b"out-\xff-0")), **ok))
    c.append(Case("non-UTF-8 --model, --suite and --out", "non-UTF-8 path",
                  _ev("--model", _u(nu, b"m\xfe.safetensors"), "--data", "digits", "--limit", "20", "--suite", _u(nu, b"s\xfe.yaml"), out=_u(nu, b"out-\xff-1")), **ok))
    c.append(Case("non-UTF-8 --data npz:", "non-UTF-8 path", _ev("--model", "zoo:digits-cnn", "--data", "npz:" + _u(nu, b"d\xfe.npz"), out=_u(nu, b"out-\xff-2")), **ok))
    c.append(Case("non-UTF-8 --baseline and --policy", "non-UTF-8 path",
                  _digits_ev("--baseline", cards[0], "--policy", _u(nu, b"p\xfe.yaml"), "--junit", _u(nu, b"j\xff.xml"), out=_u(nu, b"out-\xff-3")), code=1, stderr_lines=0))  # the example policy fails this tiny run
    c.append(Case("report of a card under a non-UTF-8 folder", "non-UTF-8 path", ["report", cards[1], "-o", _u(nu, b"r\xff.html")], **ok))
    c.append(Case("compare of cards under non-UTF-8 folders", "non-UTF-8 path", ["compare", cards[0], cards[1]], code=0, stderr_lines=0))
    c.append(Case("gate of a card under a non-UTF-8 folder", "non-UTF-8 path", ["gate", cards[2], "--policy", _u(nu, b"p\xfe.yaml")], code=1, stderr_lines=0))  # a gate verdict, not an error
    for name, args in [
        ("--model", _ev("--model", _u(nu, b"nope\xff.safetensors"), "--data", "digits")),
        ("--data npz:", _ev("--model", "zoo:digits-cnn", "--data", "npz:" + _u(nu, b"nope\xff.npz"))),
        ("--data folder:", _ev("--model", "zoo:digits-cnn", "--data", "folder:" + _u(nu, b"nope\xff"))),
        ("--suite", _digits_ev("--suite", _u(nu, b"nope\xff.yaml"))),
        ("--policy", _digits_ev("--policy", _u(nu, b"nope\xff.yaml"))),
        ("--baseline", _digits_ev("--baseline", _u(nu, b"nope\xff.json"), "--policy", pol)),
        ("report", ["report", _u(nu, b"nope\xff.json")]),
        ("verify", ["verify", _u(nu, b"nope\xff.json")]),
        ("sign", ["sign", _u(nu, b"nope\xff.json"), "--generate-key", _u(nu, b"k\xff.pem")]),
        ("--out under a missing file's name in a non-UTF-8 folder", _digits_ev(out=_u(nu, b"m\xfe.safetensors/sub"))),
    ]:
        c.append(Case(f"non-UTF-8 {name} that does not exist", "non-UTF-8 path", args))
    return c


def _fs_tools() -> str | None:
    """Why the read-only and full file-system cases cannot run here, or None when they can."""
    if not shutil.which("unshare") or not shutil.which("mount"):
        return "needs unshare and mount (util-linux)"
    r = subprocess.run(["unshare", "-Urm", "sh", "-c", "d=$(mktemp -d) && mount -t tmpfs -o size=64k tmpfs $d && mount -o remount,ro $d"],
                       capture_output=True, text=True, timeout=60)
    return None if r.returncode == 0 else f"no unprivileged user+mount namespace with tmpfs here ({r.stderr.strip()[:120]})"


def fs_cases(d: Path, prior: Path) -> tuple[list[Case], str]:
    """Cases on a read-only file system and a full disk; they run in one user+mount namespace whose
    start-up script (returned) mounts the read-only tmpfs. The full tmpfs is mounted and filled per case."""
    fs = d / "fs"
    ro, full, keys = fs / "ro", fs / "full", fs / "keys"
    for p in (ro, full, keys):
        p.mkdir(parents=True)
    start = f"mount -t tmpfs -o size=1m tmpfs {ro} && cp -r {prior} {ro}/prior && mount -o remount,ro {ro}"
    c: list[Case] = []
    rp = str(ro / "prior")
    corrupt = ["corrupt", "--data", "digits", "--limit", "10", "--corruptions", "gaussian_noise", "-q", "--out"]
    pol = str(HERE.parent / "reports" / "example-policy.yaml")
    for name, args in [
        ("evaluate --out", _digits_ev(out=str(ro / "new"))),
        ("evaluate --out an earlier run", _digits_ev(out=rp)),
        ("evaluate --resume an earlier run", _digits_ev("--resume", out=rp)),
        ("evaluate --junit", _digits_ev("--policy", pol, "--junit", str(ro / "j.xml"), out=str(fs / "rw-out"))),
        ("report next to the scorecard", ["report", f"{rp}/scorecard.json"]),
        ("report -o", ["report", str(prior / "scorecard.json"), "-o", str(ro / "r.html")]),
        ("sign the scorecard in place", ["sign", f"{rp}/scorecard.json", "--generate-key", str(keys / "k1.pem")]),
        ("sign --generate-key", ["sign", str(prior / "scorecard.json"), "--generate-key", str(ro / "k.pem")]),
        ("gate --junit", ["gate", str(prior / "scorecard.json"), "--policy", pol, "--junit", str(ro / "j.xml")]),
        ("corrupt --out", [*corrupt, str(ro / "c")]),
    ]:
        c.append(Case(f"read-only file system: {name}", "read-only file system", args, inspect=[rp], namespace=True))

    def fill(free_kib: int, copy_prior: bool = False) -> str:
        """A fresh 512 KiB tmpfs on ``full``, filled but for ``free_kib``."""
        cp = f" && cp -r {prior} {full}/prior" if copy_prior else ""
        return (f"umount {full} 2>/dev/null; mount -t tmpfs -o size=512k tmpfs {full}{cp} && (cat /dev/zero > {full}/filler 2>/dev/null; true)"
                f" && truncate -s -{free_kib}K {full}/filler")

    run = str(full / "run")
    for free in FULL_DISK_FREE_KIB:  # the disk fills at every stage: the lock, the store, a batch, the scorecard, the report
        c.append(Case(f"full disk ({free} KiB free): evaluate", "full disk", _digits_ev("--batch-size", "5", out=run), setup=fill(free), inspect=[run], namespace=True))
        c.append(Case(f"full disk ({free} KiB free): evaluate --resume after freeing space", "full disk", _digits_ev("--batch-size", "5", "--resume", out=run),
                      code=0, stderr_lines=0, setup=f"rm -f {full}/filler", inspect=[run], namespace=True))
    fp = str(full / "prior")
    c.append(Case("full disk: evaluate over an earlier run", "full disk", _digits_ev(out=fp), setup=fill(0, copy_prior=True), inspect=[fp], namespace=True))
    c.append(Case("full disk: report next to the scorecard", "full disk", ["report", f"{fp}/scorecard.json", "-o", f"{fp}/r2.html"], inspect=[fp], namespace=True))
    c.append(Case("full disk: sign the scorecard in place", "full disk", ["sign", f"{fp}/scorecard.json", "--generate-key", str(keys / "k3.pem")], inspect=[fp], namespace=True))
    c.append(Case("full disk: gate --junit", "full disk", ["gate", f"{fp}/scorecard.json", "--policy", pol, "--junit", f"{fp}/j.xml"], inspect=[fp], namespace=True))
    c.append(Case("full disk: corrupt --out", "full disk", [*corrupt, str(full / "c")], setup=fill(16), inspect=[str(full)], namespace=True))
    c.append(Case("full disk: corrupt again after freeing space", "full disk", [*corrupt, str(full / "c")], code=0, stderr_lines=0,
                  setup=f"rm -f {full}/filler", namespace=True))
    return c, start


#: free space left on the full disk, KiB: the run stops at the lock, the store, a batch and the scorecard
FULL_DISK_FREE_KIB = (0, 8, 24, 48, 64, 80, 96, 112)


def _snapshot(folder: Path) -> dict[str, str]:
    skip = (".robustlab.lock",)
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in skip and not p.name.endswith(("-wal", "-shm"))}


@pytest.fixture(scope="session")
def corpus_results(tmp_path_factory):
    d = tmp_path_factory.mktemp("corpus")
    marker = d / "CODE_RAN"
    cases = build_corpus(d, marker)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    env.pop("MLFLOW_TRACKING_URI", None)
    workers = 2
    procs, priors = [], []
    fs_skip: str | None = "not started"
    for w in range(workers):
        prior = d / f"prior{w}"
        if w == 0:  # one real run leaves the earlier outputs; the other workers get copies
            r = subprocess.run([sys.executable, "-m", "robustlab", *_digits_ev(out=str(prior))], env=env, capture_output=True, text=True, timeout=600)
            assert r.returncode == 0, r.stderr
        else:
            shutil.copytree(d / "prior0", prior)
        priors.append((prior, _snapshot(prior)))
        # the non-UTF-8 cases read what the earlier ones wrote: one worker, in order
        mine = [c for i, c in enumerate(cases) if not c.namespace and (0 if c.category == "non-UTF-8 path" else i % workers) == w]
        payload = [{"name": c.name, "args": [a.replace(PRIOR, str(prior)) for a in c.args], "cwd": str(d), "env": c.env} for c in mine]
        (d / f"cases{w}.json").write_text(json.dumps(payload))
        wd = d / f"work{w}"
        wd.mkdir()
        procs.append(subprocess.Popen([sys.executable, DRIVER, str(d / f"cases{w}.json"), str(wd / "results.json")], env=env))
        if w == 0:
            fs_skip = _fs_tools()
            if fs_skip is None:  # a third worker in a user+mount namespace: read-only file system and full disk
                fprior = d / "prior-fs"
                shutil.copytree(d / "prior0", fprior)
                extra, start = fs_cases(d, fprior)
                cases.extend(extra)
                payload = [{"name": c.name, "args": c.args, "cwd": str(d), "env": c.env, "setup": c.setup, "inspect": c.inspect} for c in extra]
                (d / "cases-fs.json").write_text(json.dumps(payload))
                (d / "work-fs").mkdir()
                script = f'{start} && exec "$0" "$@"'
                procs.append(subprocess.Popen(["unshare", "-Urm", "sh", "-c", script, sys.executable, DRIVER, str(d / "cases-fs.json"),
                                               str(d / "work-fs" / "results.json")], env=env))
                priors.append((fprior, _snapshot(fprior)))
    for p in procs:
        assert p.wait(timeout=1200) == 0
    results = {}
    for w in [*(f"work{w}" for w in range(workers)), *(["work-fs"] if fs_skip is None else [])]:
        for r in json.loads((d / w / "results.json").read_text()):
            results[r["name"]] = r
    return cases, results, marker, priors, fs_skip


def test_corpus_has_150_inputs_in_every_category(corpus_results):
    cases, results, _m, _p, _fs = corpus_results
    assert len(cases) >= 150 and len({c.name for c in cases}) == len(cases)
    assert {c.category for c in cases} >= {"model", "model metadata", "options", "data", "suite", "output", "scorecard", "non-UTF-8 path"}
    assert set(results) == {c.name for c in cases}


def test_read_only_and_full_file_systems_are_in_the_corpus(corpus_results):
    cases, results, _m, priors, fs_skip = corpus_results
    if fs_skip is not None:
        pytest.skip(f"read-only and full file-system cases not run: {fs_skip}")
    cats = {c.category for c in cases}
    assert {"read-only file system", "full disk"} <= cats
    ro = [c for c in cases if c.category == "read-only file system"]
    assert len({c.args[0] for c in ro}) >= 5  # evaluate, report, sign, gate, corrupt
    for c in ro:
        assert "read-only" in results[c.name]["stderr"], (c.name, results[c.name]["stderr"])
        assert ".tmp" not in results[c.name]["stderr"], (c.name, results[c.name]["stderr"])  # names the file asked for, not a temp file
    fs_prior = priors[-1][1]  # the earlier run copied onto the read-only file system stays byte-identical
    for c in ro:
        after = {k: v for k, v in results[c.name]["after"][c.inspect[0]].items() if k != ".robustlab.lock" and not k.endswith(("-wal", "-shm", ":text"))}
        assert after == fs_prior and "scorecard.json" in after, c.name


def _card_metrics(text: str) -> dict[str, float]:
    from robustlab.scorecard import loads_strict

    card = loads_strict(text)
    return {k: v for ch in card["checks"] for k, v in ch["metrics"].items()}


def _same(a: float, b: float) -> bool:
    """Equal up to float noise: some CPUs pick other convolution kernels for other batch sizes."""
    return a == b or (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


def test_full_disk_says_so_and_loses_nothing(corpus_results):
    """At every stage the disk fills (lock, store, a batch, the scorecard, the report): one line saying
    the disk is full, no temp or half-written file left, an earlier scorecard kept byte for byte, and
    a --resume after freeing space ends with the numbers of an uninterrupted run."""
    cases, results, _m, priors, fs_skip = corpus_results
    if fs_skip is not None:
        pytest.skip(f"full-disk cases not run: {fs_skip}")
    prior, before = priors[0]
    want = _card_metrics((prior / "scorecard.json").read_text(encoding="utf-8"))
    failed_at = set()
    for c in (c for c in cases if c.category == "full disk" and c.code == 2):
        r = results[c.name]
        assert "disk is full" in r["stderr"], (c.name, r["stderr"])
        for folder, files in r["after"].items():
            assert not [f for f in files if f.endswith(".tmp")], (c.name, sorted(files))
            for f, text in files.items():
                if f.endswith(":text"):  # a scorecard present after the failure is whole (strict JSON)
                    _card_metrics(text)
        if "earlier run" in c.name or "in place" in c.name or "report next" in c.name or "gate" in c.name:
            files = next(iter(r["after"].values()))
            assert "scorecard.json" in before
            for name in (n for n in before if n != "results.sqlite"):  # a run without --resume may clear the store: it was asked to
                assert files.get(name) == before[name], (c.name, name)
    for free in FULL_DISK_FREE_KIB:
        first = results[f"full disk ({free} KiB free): evaluate"]
        failed_at |= {f for f in (".robustlab.lock", "results.sqlite", "scorecard.json") if f in first["stderr"]}
        resumed = results[f"full disk ({free} KiB free): evaluate --resume after freeing space"]
        files = next(iter(resumed["after"].values()))
        got = _card_metrics(files["scorecard.json:text"])
        # batch size 5 here against the prior run's default: equal up to the float noise of the kernels
        assert got.keys() == want.keys() and all(_same(got[k], want[k]) for k in want), (free, got, want)
    assert failed_at == {".robustlab.lock", "results.sqlite", "scorecard.json"}, failed_at  # the sizes stop the run at each file it writes


def test_non_utf8_paths_work_and_stay_strict_json(corpus_results, tmp_path_factory):
    """A run whose --out, --model, --suite and --data have non-UTF-8 bytes completes; the scorecard
    records the paths with visible \\xNN escapes and stays strict JSON (no lone surrogates)."""
    from robustlab.scorecard import read_strict_json

    cases, results, _m, _p, _fs = corpus_results
    ok = [c for c in cases if c.category == "non-UTF-8 path" and c.code == 0]
    assert len(ok) >= 5
    for c in ok:
        assert results[c.name]["rc"] == 0, (c.name, results[c.name]["stderr"])
    d = Path(ok[0].args[ok[0].args.index("--out") + 1]).parent
    cards = sorted(d.glob("out-*/scorecard.json"))
    assert len(cards) == 4
    for p in cards:
        card = read_strict_json(p)
        text = p.read_text(encoding="utf-8")
        assert "nonutf8-\\\\xff" in text  # the byte, escaped in the JSON text as \\xff
        assert card["run"]["complete"] is True
    model = read_strict_json(d / os.fsdecode(b"out-\xff-1") / "scorecard.json")["model"]
    assert model["path"].endswith("nonutf8-\\xff/m\\xfe.safetensors")
    assert (d / os.fsdecode(b"r\xff.html")).is_file() and (d / os.fsdecode(b"j\xff.xml")).is_file()


def test_every_hostile_input_ends_cleanly(corpus_results):
    cases, results, marker, priors, _fs = corpus_results
    bad = []
    for c in cases:
        r = results[c.name]
        lines = [ln for ln in r["stderr"].splitlines() if ln.strip()]
        problems = []
        if r["rc"] != c.code:
            problems.append(f"exit {r['rc']} (expected {c.code})")
        if len(lines) != c.stderr_lines:
            problems.append(f"{len(lines)} stderr lines")
        if "Traceback" in r["stderr"]:
            problems.append("traceback")
        if c.code == 2 and lines and not lines[0].startswith("error: "):
            problems.append("not an 'error:' line")
        if problems:
            bad.append(f"{c.category} / {c.name}: {', '.join(problems)}: {r['stderr'][-300:]!r}")
    assert not bad, f"{len(bad)} of {len(cases)} cases:\n" + "\n".join(bad)


def test_no_code_ran_and_earlier_outputs_are_untouched(corpus_results):
    _c, _r, marker, priors, _fs = corpus_results
    assert not marker.exists(), "a hostile input executed code"
    for folder, before in priors:
        assert _snapshot(folder) == before
