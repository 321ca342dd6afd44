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
    for w in range(workers):
        prior = d / f"prior{w}"
        if w == 0:  # one real run leaves the earlier outputs; the other workers get copies
            r = subprocess.run([sys.executable, "-m", "robustlab", *_digits_ev(out=str(prior))], env=env, capture_output=True, text=True, timeout=600)
            assert r.returncode == 0, r.stderr
        else:
            shutil.copytree(d / "prior0", prior)
        priors.append((prior, _snapshot(prior)))
        mine = [c for i, c in enumerate(cases) if i % workers == w]
        payload = [{"name": c.name, "args": [a.replace(PRIOR, str(prior)) for a in c.args], "cwd": str(d), "env": c.env} for c in mine]
        (d / f"cases{w}.json").write_text(json.dumps(payload))
        wd = d / f"work{w}"
        wd.mkdir()
        procs.append(subprocess.Popen([sys.executable, DRIVER, str(d / f"cases{w}.json"), str(wd / "results.json")], env=env))
    for p in procs:
        assert p.wait(timeout=1200) == 0
    results = {}
    for w in range(workers):
        for r in json.loads((d / f"work{w}" / "results.json").read_text()):
            results[r["name"]] = r
    return cases, results, marker, priors


def test_corpus_has_150_inputs_in_every_category(corpus_results):
    cases, results, _m, _p = corpus_results
    assert len(cases) >= 150 and len({c.name for c in cases}) == len(cases)
    assert {c.category for c in cases} >= {"model", "model metadata", "options", "data", "suite", "output", "scorecard"}
    assert set(results) == {c.name for c in cases}


def test_every_hostile_input_ends_cleanly(corpus_results):
    cases, results, marker, priors = corpus_results
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
    _c, _r, marker, priors = corpus_results
    assert not marker.exists(), "a hostile input executed code"
    for folder, before in priors:
        assert _snapshot(folder) == before
