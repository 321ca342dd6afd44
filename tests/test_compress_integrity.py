"""Integrity of compressed variants: `compress` can be re-run onto its own output and judges its
options before the output path, refuses to compress an int8 (or half-precision) variant again,
`evaluate --variants` refuses a variant of another base model and says when it cannot check, its
item list is checked before any work, and a variant whose record lies about its tensors is refused."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from robustlab.compress import CompressionError, CompressionSpec
from robustlab.errors import ModelLoadError
from robustlab.models import LoadOptions, load_model
from robustlab.pipelines.compress import CompressConfig, compress
from robustlab.pipelines.evaluate import RunConfig
from robustlab.pipelines.variants import VariantOptions, evaluate_variants, resolve_variants
from robustlab.suite import load_suite

CLEAN = Path(__file__).parent / "suites" / "clean.yaml"


def _cli(*args: str) -> tuple[int, str]:
    from robustlab.cli import main

    r = CliRunner().invoke(main, list(args))
    return r.exit_code, r.output


def _make(tmp: Path, method: str, name: str, model: str = "zoo:digits-cnn", **kw: object) -> Path:
    return compress(CompressConfig(model, LoadOptions(), CompressionSpec.parse(method), tmp / name, **kw)).path  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("integrity")
    return {
        "fp16": _make(d, "fp16", "fp16.safetensors"),
        "pu": _make(d, "prune-unstructured:0.5", "pu.safetensors"),
        "ps": _make(d, "prune-structured:0.3", "ps.safetensors"),
        "int8": _make(d, "int8-static", "int8.safetensors", calibration_n=32),
    }


def _edit(src: Path, dst: Path, *, record: dict[str, object] | None = None, tensors=None) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        meta = f.metadata()
        sd = {k: f.get_tensor(k) for k in f.keys()}
    info = json.loads(meta["robustlab"])
    info["compression"].update(record or {})
    if tensors is not None:
        tensors(sd)
    save_file(sd, str(dst), metadata={**meta, "robustlab": json.dumps(info)})
    return dst


# -- 1. re-running compress; options before the output path ---------------------------------------
def test_compress_run_twice_replaces_its_output_atomically(tmp_path: Path) -> None:
    out = tmp_path / "t2" / "rep.safetensors"
    for _ in range(2):
        code, text = _cli("compress", "--model", "zoo:digits-cnn", "--method", "fp16", "--out", str(out))
        assert code == 0, text
    assert sorted(p.name for p in out.parent.iterdir()) == ["rep.safetensors"]  # no temporary file left behind
    assert load_model(str(out)).info.extra["compression"]["method"] == "fp16"


def test_an_existing_folder_as_out_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "dir.safetensors").mkdir()
    code, text = _cli("compress", "--model", "zoo:digits-cnn", "--method", "fp16", "--out", str(tmp_path / "dir.safetensors"))
    assert code == 2 and len(text.strip().splitlines()) == 1 and "folder" in text, text


def test_options_are_judged_before_the_output_path(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("a file")
    bad_out = str(tmp_path / "f" / "x.safetensors")  # under a file: cannot be written
    code, text = _cli("compress", "--model", "zoo:digits-cnn", "--method", "qat", "--epochs", "0", "--out", bad_out)
    assert code == 2 and "--epochs" in text and "not a folder" not in text, text
    from safetensors.torch import load_file, save_file

    zoo = load_model("zoo:digits-cnn").info.path
    save_file(load_file(str(zoo)), str(tmp_path / "plain.safetensors"))  # no metadata: names no data set
    code, text = _cli("compress", "--model", str(tmp_path / "plain.safetensors"), "--arch", "zoo-arch:digits-cnn", "--method", "int8-static", "--out", bad_out)
    assert code == 2 and "--calibration-data" in text and "not a folder" not in text, text
    code, text = _cli("compress", "--model", "zoo:digits-cnn", "--method", "fp16", "--out", bad_out)
    assert code == 2 and "not a folder" in text and len(text.strip().splitlines()) == 1, text


def test_the_model_file_itself_is_not_an_output(made: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    own = Path(shutil.copy(made["pu"], tmp_path / "pu.safetensors"))
    with pytest.raises(CompressionError, match="file of the model being compressed"):
        compress(CompressConfig(str(own), LoadOptions(), CompressionSpec.parse("fp16"), own))
    assert load_model(str(own)).info.extra["compression"]["method"] == "prune-unstructured"


# -- 2. compressing a variant again ---------------------------------------------------------------
@pytest.mark.parametrize("method", ["int8-dynamic", "prune-unstructured:0.5", "fp16"])
def test_an_int8_variant_cannot_be_compressed_again(method: str, made: dict[str, Path], tmp_path: Path) -> None:
    code, text = _cli("compress", "--model", str(made["int8"]), "--method", method, "--out", str(tmp_path / "x.safetensors"))
    assert code == 2 and len(text.strip().splitlines()) == 1, text
    assert "int8 variant" in text and "cannot be compressed again" in text and "zoo:digits-cnn" in text
    assert not (tmp_path / "x.safetensors").exists()


def test_a_half_precision_variant_cannot_be_compressed_again(made: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(CompressionError, match="fp16 variant .* cannot be compressed again"):
        compress(CompressConfig(str(made["fp16"]), LoadOptions(), CompressionSpec.parse("prune-unstructured:0.5"), tmp_path / "x.safetensors"))


def test_a_pruned_variant_may_be_cast_to_fp16_and_keeps_its_zeros(made: dict[str, Path], tmp_path: Path) -> None:
    res = compress(CompressConfig(str(made["pu"]), LoadOptions(), CompressionSpec.parse("fp16"), tmp_path / "pu_fp16.safetensors"))
    assert res.compression["base_compression"]["method"] == "prune-unstructured"
    v = load_model(str(res.path))
    assert v.net.fc1.weight.dtype == torch.float16
    assert float((v.net.fc1.weight == 0).float().mean()) > 0.3


# -- 3. a variant of another base model -----------------------------------------------------------
def _cfg(tmp: Path, model: str = "zoo:digits-cnn", **kw: object) -> RunConfig:
    return RunConfig(model_spec=model, load=LoadOptions(), suite=load_suite(str(CLEAN)), out_dir=tmp / "out", limit=8, quiet=True, batch_size=8, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def other_variant(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pruned variant of a different digits CNN (the zoo weights, one bias changed)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    d = tmp_path_factory.mktemp("other")
    with safe_open(str(load_model("zoo:digits-cnn").info.path), framework="pt") as f:
        meta = f.metadata()
        sd = {k: f.get_tensor(k) for k in f.keys()}
    sd["fc2.bias"] = sd["fc2.bias"] + 0.5
    save_file(sd, str(d / "other.safetensors"), metadata=meta)
    return _make(d, "prune-unstructured:0.5", "otherp.safetensors", model=str(d / "other.safetensors"))


def test_a_variant_of_another_base_model_is_refused(other_variant: Path, tmp_path: Path) -> None:
    zoo_sha = load_model("zoo:digits-cnn").info.sha256
    other_sha = json.loads(_header(other_variant))["compression"]["base_sha256"]
    with pytest.raises(CompressionError) as err:
        resolve_variants(_cfg(tmp_path), [str(other_variant)], VariantOptions())
    assert zoo_sha[:12] in str(err.value) and other_sha[:12] in str(err.value)
    code, text = _cli("evaluate", "--model", "zoo:digits-cnn", "--variants", str(other_variant), "--suite", str(CLEAN), "--limit", "8",
                      "--out", str(tmp_path / "cli"), "--no-mlflow", "--no-report")
    assert code == 2 and len(text.strip().splitlines()) == 1 and "compressed from" in text, text


def test_a_variant_of_the_same_base_passes_the_check(made: dict[str, Path], tmp_path: Path) -> None:
    notes: dict[str, str] = {}
    assert resolve_variants(_cfg(tmp_path), [str(made["pu"])], VariantOptions(), notes=notes) == [("pu", str(made["pu"]))]
    assert notes["pu"].startswith("checked")


def test_a_base_without_a_file_hash_is_said_unchecked(made: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "plugins"))
    cfg = _cfg(tmp_path, model="factory:rl_test_models:zoo_digits", data_spec="digits", dataset="digits")
    with caplog.at_level(logging.WARNING, logger="robustlab.pipelines.variants"):
        _base, runs, cmp = evaluate_variants(cfg, [str(made["pu"])], VariantOptions(latency_batch=4))
    assert any("not checked" in r.getMessage() for r in caplog.records)
    assert runs[0].card.run["base_model_check"].startswith("not checked")
    assert any(a["name"] == "base_model" and "not checked" in a["message"] for a in cmp["variants"][0]["audit"])


# -- 4. the --variants list -----------------------------------------------------------------------
def test_a_missing_variant_file_is_said_missing(tmp_path: Path) -> None:
    for item in ("missing.safetensors", "sub/missing"):
        with pytest.raises(CompressionError, match=rf"file {item} does not exist"):
            resolve_variants(_cfg(tmp_path), [item], VariantOptions())
    code, text = _cli("evaluate", "--model", "zoo:digits-cnn", "--variants", "missing.safetensors", "--suite", str(CLEAN), "--limit", "8",
                      "--out", str(tmp_path / "cli"), "--no-mlflow", "--no-report")
    assert code == 2 and "does not exist" in text and "unknown compression method" not in text, text


def test_duplicate_variants_are_refused_before_any_compression(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import robustlab.pipelines.variants as variants

    def no_work(*_a: object, **_k: object) -> None:
        raise AssertionError("compressed before the list was checked")

    monkeypatch.setattr(variants, "compress", no_work)
    with pytest.raises(CompressionError, match="used twice"):
        resolve_variants(_cfg(tmp_path), ["fp16", "int8-static", "fp16"], VariantOptions())


def test_an_empty_variant_list_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(CompressionError, match="names no variant"):
        resolve_variants(_cfg(tmp_path), [], VariantOptions())
    code, text = _cli("evaluate", "--model", "zoo:digits-cnn", "--variants", ",", "--suite", str(CLEAN), "--limit", "8",
                      "--out", str(tmp_path / "cli"), "--no-mlflow", "--no-report")
    assert code == 2 and "names no variant" in text, text


# -- 5. a record that lies about its tensors ------------------------------------------------------
def _header(path: Path) -> str:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return str(f.metadata()["robustlab"])


@pytest.mark.parametrize("src, record, says", [
    ("fp16", {"method": "bf16"}, "tensors are float16 but its record says bf16"),
    ("pu", {"method": "fp16", "sparsity": None}, "tensors are float32 but its record says fp16"),
    ("int8", {"method": "fp16"}, "record says fp16"),
    ("pu", {"sparsity": 0.9}, "0.5 sparse .* record says prune-unstructured:0.9"),
    ("ps", {"sparsity": 0.6}, "output channels .* record says prune-structured:0.6"),
])
def test_a_record_that_lies_about_the_tensors_is_refused(src: str, record: dict[str, object], says: str, made: dict[str, Path], tmp_path: Path) -> None:
    bad = _edit(made[src], tmp_path / "bad.safetensors", record=record)
    with pytest.raises(ModelLoadError, match=says) as err:
        load_model(str(bad))
    assert "edited or damaged" in str(err.value)
    code, text = _cli("evaluate", "--model", str(bad), "--suite", str(CLEAN), "--limit", "8", "--out", str(tmp_path / "cli"), "--no-mlflow", "--no-report")
    assert code == 2 and len(text.strip().splitlines()) == 1, text


def test_a_float64_tensor_in_a_pruned_file_is_refused(made: dict[str, Path], tmp_path: Path) -> None:
    bad = _edit(made["pu"], tmp_path / "bad.safetensors", tensors=lambda sd: sd.__setitem__("fc1.weight", sd["fc1.weight"].double()))
    with pytest.raises(ModelLoadError, match="float32 and float64"):
        load_model(str(bad))


def test_honest_variants_still_load(made: dict[str, Path]) -> None:
    for name, path in made.items():
        assert load_model(str(path)).info.extra["compression"]["method"], name


def test_an_empty_variants_option_is_refused_by_evaluate(tmp_path: Path) -> None:
    """Before: `evaluate --variants ""` ran the base alone and exited 0."""
    from robustlab.cli import main

    r = CliRunner().invoke(main, ["evaluate", "--model", "zoo:digits-cnn", "--variants", "", "--limit", "10", "--out", str(tmp_path / "o"), "--no-mlflow"])
    assert r.exit_code == 2, r.output
    assert not (tmp_path / "o" / "scorecard.json").exists()
