"""``robustlab evaluate``: run a suite on a model and write ``OUT/scorecard.json``."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from ..pipelines.postrun import PostRunOptions
    from ..scorecard import Scorecard

from .common import data_options, default_out_dir, load_options_from, check_output_path, model_options, output_lock, run_options, run_settings, user_errors

log = logging.getLogger(__name__)


@click.command("evaluate")
@model_options
@data_options
@click.option("--suite", default="quick", show_default=True, help="Built-in suite name (see `robustlab suites`) or a YAML file.")
@run_options
@click.option("--policy", type=click.Path(dir_okay=False), default=None, help="Release-gate policy YAML; failing it exits 1.")
@click.option("--baseline", default=None, help="Baseline scorecard file or MLflow run id for non-regression rules.")
@click.option("--junit", type=click.Path(dir_okay=False), default=None, help="Write JUnit XML, one test case per gate rule.")
@click.option("--trusted-keys", "trusted_keys", multiple=True, type=click.Path(path_type=Path),
              help="Trusted public keys (.pem files or folders) for a policy with 'signature: required': the --baseline must be signed by one [also: $ROBUSTLAB_TRUSTED_KEYS].")
@click.option("--no-mlflow", is_flag=True, help="Do not record the run in MLflow.")
@click.option("--mlflow-uri", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else a SQLite store in OUT).")
@click.option("--no-report", is_flag=True, help="Do not write report.html.")
@click.option("--save-adversarial", is_flag=True, help="Write the adversarial checks' examples under OUT/adversarial/ (one .npz per batch, epsilon and check; read by the uncertainty check).")
@click.option("--fit-data", default=None, help="Data spec whose train split fits OOD detectors (default: the evaluation data set's train split), e.g. npz:cifar10_train.npz.")
@click.option("--variants", default=None, help="Compressed variants to evaluate beside the model, same suite, seed and samples: methods (fp16,int8-static,prune-unstructured:0.5) and/or variant files, comma-separated. Writes OUT/base/, OUT/<variant>/ and OUT/variants.json.")
@click.option("--calibration-data", default=None, help="With --variants: data spec whose train split calibrates int8-static (default: the model's data set).")
@user_errors
def evaluate(**kw: Any) -> None:
    """Evaluate a model with a suite of checks and write a scorecard.

    \b
    Examples:
      robustlab evaluate --model zoo:digits-cnn
      robustlab evaluate --model zoo:cifar10-resnet18 --suite standard --limit 100
      robustlab evaluate --model weights.safetensors --arch torchvision:resnet18 --data folder:val/
    """
    from ..suite import load_suite

    suite = load_suite(kw["suite"])  # validated before any model is loaded
    for p in ("policy",):
        if kw.get(p) and not Path(kw[p]).is_file():
            raise click.BadParameter(f"{kw[p]} does not exist", param_hint=f"--{p}")
    if kw.get("policy"):
        _validate_policy(Path(kw["policy"]), baseline=kw.get("baseline"), trusted_keys=tuple(kw.get("trusted_keys") or ()))
    b = kw.get("baseline")
    if b and not Path(b).is_file() and (os.sep in b or b.endswith(".json")):  # a missing file, not a run id: refuse before the run
        raise click.BadParameter(f"baseline scorecard {_shown(b)} does not exist; pass a scorecard.json path or an MLflow run id", param_hint="--baseline")
    check_output_path(kw.get("out_dir"), "--out")
    check_output_path(kw.get("junit"), "--junit")

    from ..distributed import from_env
    from ..pipelines.evaluate import RunConfig, check_fit_data, evaluate as run_evaluate
    from ..pipelines.postrun import PostRunOptions

    out = Path(kw["out_dir"]) if kw.get("out_dir") else default_out_dir(kw["model_spec"], kw["suite"])
    cfg = RunConfig(
        model_spec=kw["model_spec"], load=load_options_from(kw), suite=suite, data_spec=kw.get("data_spec"), dataset=kw.get("dataset_name"), data_root=kw.get("data_root"),
        download=bool(kw.get("download")), out_dir=out, limit=kw.get("limit"), ood_fit_data=kw.get("fit_data") or None, save_adversarial=bool(kw.get("save_adversarial")), **run_settings(kw),
    )
    post = PostRunOptions(policy=Path(kw["policy"]) if kw.get("policy") else None, baseline=kw.get("baseline"), junit=Path(kw["junit"]) if kw.get("junit") else None,
                          mlflow=not kw.get("no_mlflow"), mlflow_uri=kw.get("mlflow_uri"), report=not kw.get("no_report"),
                          trusted_keys=tuple(kw.get("trusted_keys") or ()))
    if kw.get("variants") is not None:  # "" is an empty list, refused below, not "no variants"
        check_fit_data(cfg)  # before any variant is built (the pipeline checks it again for each run)
        sys.exit(_evaluate_variants(cfg, post, kw))
    with output_lock(out, cfg.command):  # held through the report and MLflow, not only the checks
        card = run_evaluate(cfg)
        if not from_env().is_main:  # under torchrun only rank 0 reports
            sys.exit(0)
        code = finish(card, out, post, quiet=cfg.quiet, as_json=bool(kw.get("as_json")))
    sys.exit(code)


def _evaluate_variants(cfg: Any, post: "PostRunOptions", kw: dict[str, Any]) -> int:
    """Base and variants (see robustlab.pipelines.variants); gates of a variant run against the base scorecard."""
    from dataclasses import replace

    from ..compress.methods import CompressionSpec
    from ..pipelines.variants import VariantOptions, evaluate_variants

    items = [v.strip() for v in str(kw["variants"]).split(",") if v.strip()]
    for v in items:
        if not Path(v).expanduser().is_file():
            CompressionSpec.parse(v)  # a bad method is a usage error before any model loads
    base, runs, _cmp = evaluate_variants(cfg, items, VariantOptions(calibration_data=kw.get("calibration_data")))
    # the base is gated only against a --baseline; every variant is gated against the base scorecard
    codes = [finish(base.card, base.out_dir, post if post.baseline else replace(post, policy=None, junit=None), quiet=cfg.quiet, as_json=False)]
    for r in runs:
        junit = post.junit.with_name(f"{post.junit.stem}-{r.name}{post.junit.suffix}") if post.junit else None
        codes.append(finish(r.card, r.out_dir, replace(post, baseline=str(base.out_dir / "scorecard.json") if post.policy else None, junit=junit, baseline_in_run=True), quiet=cfg.quiet, as_json=False))
    if not cfg.quiet:
        click.echo((Path(cfg.out_dir) / "variants.txt").read_text())
    return 1 if 1 in codes else (3 if 3 in codes else max(codes))


def _shown(path: str) -> str:
    from ..errors import printable

    return printable(path)


def _validate_policy(path: Path, *, baseline: str | None, trusted_keys: tuple[Path, ...]) -> None:
    """A bad policy, or one that requires signatures with a --baseline but no trusted key, is refused
    before the run (exit 2), not after it."""
    from ..errors import RobustlabError
    from ..gates import Requirement, load_policy
    from ..pipelines.gate import Trust

    pol = load_policy(path)
    if pol.signature is Requirement.REQUIRED and baseline and not Trust(trusted_keys=trusted_keys).keys():
        raise RobustlabError(f"policy {path} requires a baseline signed by a trusted key, but no key is trusted: pass the signer's "
                             "public key with --trusted-keys FILE|DIR, or set $ROBUSTLAB_TRUSTED_KEYS.")


def finish(card: "Scorecard", out: Path, post: "PostRunOptions", *, quiet: bool, as_json: bool, model_path: Path | None = None) -> int:
    """Print the summary, hand the scorecard to tracking/report/gates; return the exit code."""
    from ..pipelines.postrun import after_run
    from .summary import summary_table

    mp = model_path or (Path(card.model["path"]) if card.model.get("path") else None)
    code = after_run(card, out, policy=post.policy, baseline=post.baseline, junit=post.junit, mlflow=post.mlflow, mlflow_uri=post.mlflow_uri,
                     command=card.run.get("command", ""), model_path=mp, artifacts=[], report=post.report,
                     trusted_keys=post.trusted_keys, baseline_in_run=post.baseline_in_run)
    if as_json:
        click.echo(card.to_json(indent=1))
    if not quiet:
        click.echo(summary_table(card), err=as_json)
        click.echo(f"scorecard: {out / 'scorecard.json'}", err=as_json)
        if (out / "report.html").is_file():
            click.echo(f"report:    {out / 'report.html'}", err=as_json)
    return code
