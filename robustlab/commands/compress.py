"""``robustlab compress``: write a compressed variant of a model (loads back without ``--trust-code``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from .common import load_options_from, model_options, user_errors, integer


@click.command("compress")
@model_options
@click.option("--method", required=True, help="fp16, bf16, int8-dynamic, int8-static, qat, prune-unstructured:<sparsity>, prune-structured:<sparsity> (e.g. prune-unstructured:0.5).")
@click.option("--out", "out", required=True, type=click.Path(), help="The variant file (.safetensors); an existing one is replaced once the new one is written.")
@click.option("--calibration-data", default=None, help="Data spec whose train split calibrates int8-static and is what qat and pruning with --epochs fine-tune on (default: the model's own data set; never test images).")
@click.option("--calibration-n", type=integer(1), default=512, show_default=True, help="Calibration images (the first N of the train split).")
@click.option("--data-root", default=None, type=click.Path(file_okay=False), help="Folder of torchvision data sets.")
@click.option("--batch-size", type=integer(1), default=128, show_default=True)
@click.option("--epochs", type=integer(0), default=None, help="Fine-tuning epochs on the train split of --calibration-data: qat (default 2, at least 1); "
              "prune-unstructured/prune-structured (default 0: no fine-tuning; pruned weights stay exactly zero). Other methods take none.")
@click.option("--seed", type=integer(), default=0, show_default=True, help="qat and pruning with --epochs: seed of the fine-tuning (shuffles).")
@click.option("--json", "as_json", is_flag=True, help="Print the compression record as JSON.")
@user_errors
def compress(**kw: Any) -> None:
    """Write a compressed variant of a model: its metadata records the method, sparsity, calibration
    data hash and the base model's hash.

    \b
    Examples:
      robustlab compress --model zoo:digits-cnn --method int8-static --out digits-int8.safetensors
      robustlab compress --model zoo:digits-cnn --method prune-unstructured:0.5 --out digits-p50.safetensors
      robustlab compress --model zoo:digits-cnn --method prune-structured:0.3 --epochs 2 --out digits-s30-ft.safetensors
      robustlab evaluate --model digits-int8.safetensors          # no --trust-code needed
    """
    from ..compress.methods import CompressionSpec
    from ..pipelines.compress import CompressConfig, check_options, compress as run_compress, method_takes_no_epochs

    spec = CompressionSpec.parse(kw["method"])  # a bad method is a usage error before the model loads
    if kw.get("epochs") is not None and method_takes_no_epochs(spec.method):
        raise click.BadParameter(f"{spec.name} has no fine-tuning stage; --epochs applies to qat, prune-unstructured:<s> and prune-structured:<s>.", param_hint="--epochs")
    out = Path(kw["out"])
    if out.suffix != ".safetensors":
        raise click.BadParameter(f"{out.name}: a variant is written as safetensors; name it *.safetensors", param_hint="--out")
    opts = load_options_from({**kw, "device": "cpu"})
    cfg = CompressConfig(model_spec=kw["model_spec"], load=opts, method=spec, out=out, calibration_data=kw.get("calibration_data"),
                         calibration_n=kw["calibration_n"], data_root=kw.get("data_root"), download=bool(kw.get("download")), batch_size=kw["batch_size"], epochs=kw["epochs"], seed=kw["seed"])
    check_options(cfg)  # every option before the output path: the pipeline judges --out once the model and its data are resolved
    res = run_compress(cfg)  # an existing --out file is replaced atomically; a folder, or a path under a file, is refused
    if kw.get("as_json"):
        click.echo(json.dumps({"path": str(res.path), "compression": res.compression}, indent=1, sort_keys=True))
    else:
        click.echo(f"{spec.name} variant of {kw['model_spec']}: {res.path} ({res.path.stat().st_size:,} bytes)")
