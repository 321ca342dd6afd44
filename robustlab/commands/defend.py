"""``robustlab defend``: train a sturdier model, optionally evaluating it before and after."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from .common import command_line, data_options, load_options_from, model_options, user_errors, integer, number
from .plugin_options import chosen_params, click_options, option_names, plugin_options

if TYPE_CHECKING:
    from ..pipelines.defend import DefendConfig, DefendResult


def _methods() -> list[tuple[str, type]]:
    from ..defenses.base import DEFENSES

    return list(DEFENSES.items())


_METHODS = _methods()


def method_params_from(kw: dict[str, Any]) -> dict[str, Any]:
    """The method's parameters from the CLI options that were given (others keep the defaults);
    an option that does not apply to the chosen method is a usage error, and so is a bad value,
    named by its option (``--step-ratio``), not by the parameter behind it (``rel_stepsize``)."""
    from ..errors import SuiteError
    from ..pipelines.defend import build_method

    params = chosen_params(METHOD_OPTIONS, kw["method"], kw, what="--method")
    try:
        build_method(kw["method"], params)
    except SuiteError as exc:
        msg = str(exc)
        for opt in METHOD_OPTIONS.values():
            f = opt.fields.get(kw["method"])
            if f is not None and msg.startswith(f.name + " "):
                raise SuiteError(f"--{opt.flag} {msg[len(f.name) + 1:]}") from None
        raise
    return params


@click.command("defend")
@model_options
@data_options
@click.option("--method", type=click.Choice([n for n, _c in _METHODS]), required=True, help="; ".join(f"{n}: {getattr(c, 'description', '')}" for n, c in _METHODS))
@click.option("--epochs", type=integer(1), default=10, show_default=True)
@click.option("--out", "out", default="robust.safetensors", show_default=True, type=click.Path(dir_okay=False), help="The defended model (.safetensors, loads without --trust-code). Checkpoints go to OUT.ckpt/.")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last checkpoint in OUT.ckpt/ (same options).")
@click.option("--overwrite", is_flag=True, help="Delete OUT.ckpt/ and OUT.eval/ of an earlier run and start over.")
@click.option("--evaluate", "suite", default=None, help="Suite (name or YAML) to evaluate the input and the defended model with, same seed; writes OUT.eval/{before,after}/ and a comparison.")
@click.option("--eval-data", default=None, help="Data the suite evaluates on (default: the test split of --data).")
@click.option("--eval-out", default=None, type=click.Path(file_okay=False), help="Folder of the evaluations (default OUT.eval/).")
@click.option("--eval-batch-size", type=integer(1), default=128, show_default=True)
# -- training loop
@click.option("--from-scratch", is_flag=True, help="Re-initialise the model's weights (seeded) instead of fine-tuning them.")
@click.option("--batch-size", type=integer(1), default=128, show_default=True, help="Training batch size.")
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default="sgd", show_default=True)
@click.option("--lr", type=number(), default=None, help="Peak learning rate [default: 0.1 from scratch, 0.01 fine-tuning (SGD); 1e-3 (Adam)].")
@click.option("--momentum", type=number(), default=0.9, show_default=True)
@click.option("--weight-decay", type=number(), default=5e-4, show_default=True)
@click.option("--schedule", type=click.Choice(["cosine", "cyclic", "multistep", "constant"]), default=None, help="Learning-rate schedule [default: the method's: cyclic for fast-at (Wong et al.), else cosine].")
@click.option("--warmup-epochs", type=number(), default=0.0, show_default=True)
@click.option("--select", type=click.Choice(["last", "best"]), default="last", show_default=True, help="Write the last epoch's weights, or the epoch with the best validation robust accuracy.")
@click.option("--val-limit", type=integer(1), default=500, show_default=True, help="Validation images per epoch.")
@click.option("--val-fraction", type=number(), default=0.1, show_default=True, help="Share of the training split held out when the data has no separate validation split.")
@click.option("--train-limit", type=integer(1), default=None, help="Train on N training images drawn at random (seeded by --seed), not the first N (files sorted by label would give a few classes).")
@click.option("--seed", type=integer(-(2**63), 2**63 - 1), default=0, show_default=True, help="Seed of all randomness (shuffles, attack starts, noise, AugMix, evaluation), a 64-bit integer.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars, epoch lines or table.")
@click.option("--no-mlflow", is_flag=True, help="Do not record the training and the evaluations in MLflow.")
@click.option("--mlflow-uri", default=None, help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else a SQLite store next to the model).")
@user_errors
def defend(**kw: Any) -> None:
    """Train a sturdier model: adversarial training, AugMix or Gaussian-noise training.

    \b
    Examples:
      robustlab defend --model zoo:digits-cnn --data digits --method fast-at --evaluate standard
      robustlab defend --model zoo:digits-cnn --data digits --method trades --optimizer adam --epochs 5
      robustlab defend --model zoo:cifar10-resnet18 --data npz:cifar10_9000_jpeg.npz --method pgd-at --eps 8/255
      robustlab defend ... --resume      # continue an interrupted run
    """
    from ..pipelines.defend import DefendConfig, run_defense
    from ..defenses.trainer import TrainConfig

    params = method_params_from(kw)
    schedule = kw["schedule"] or str(getattr(dict(_METHODS)[kw["method"]], "default_schedule", "cosine"))
    train_cfg = TrainConfig(
        epochs=kw["epochs"], batch_size=kw["batch_size"], optimizer=kw["optimizer"], lr=kw["lr"], momentum=kw["momentum"],
        weight_decay=kw["weight_decay"], schedule=schedule, warmup_epochs=kw["warmup_epochs"], seed=kw["seed"],
        from_scratch=bool(kw["from_scratch"]), val_limit=kw["val_limit"], select=kw["select"],
    )
    quiet = bool(kw["quiet"])
    cfg = DefendConfig(
        model_spec=kw["model_spec"], load=load_options_from(kw), method=kw["method"], method_params=params, train=train_cfg,
        data_spec=kw.get("data_spec"), dataset=kw.get("dataset_name"), data_root=kw.get("data_root"), download=bool(kw.get("download")), out=Path(kw["out"]),
        resume=bool(kw["resume"]), overwrite=bool(kw["overwrite"]), suite=kw["suite"], eval_dir=Path(kw["eval_out"]) if kw["eval_out"] else None,
        eval_data_spec=kw.get("eval_data"), eval_limit=kw.get("limit"), eval_batch_size=kw["eval_batch_size"], val_fraction=kw["val_fraction"], train_limit=kw["train_limit"],
        quiet=quiet, command=command_line(),
    )
    from ..progress_lines import make_progress

    def on_epoch(r: Any) -> None:
        if not quiet:
            extra = "".join(f", {k} {v:.4f}" for k, v in r.extra.items())
            click.echo(f"epoch {r.epoch}/{train_cfg.epochs}: loss {r.loss:.4f}{extra}, train acc {r.train_accuracy:.4f}, val clean acc "
                       f"{r.val_clean_accuracy:.4f}, val {r.val_robust_name} acc {r.val_robust_accuracy:.4f}, lr {r.lr:.3g} ({r.seconds:.1f}s)", err=True)

    res = run_defense(cfg, progress=make_progress(quiet), on_epoch=on_epoch)
    if res.training.collapse_warning:
        click.echo(f"warning: {res.training.collapse_warning}", err=True)
    if not quiet:
        if res.training.resumed_from is not None:
            click.echo(f"resumed after epoch {res.training.resumed_from}", err=True)
        click.echo(f"defended model: {res.model_path} (epoch {res.training.selected_epoch}; checkpoints in {cfg.ckpt_dir})")
        if res.after is not None:
            click.echo(f"\nbefore/after ({cfg.suite}, seed {cfg.train.seed}, same data):")
            click.echo(res.table)
            click.echo(f"scorecards: {cfg.eval_out / 'before' / 'scorecard.json'}, {cfg.eval_out / 'after' / 'scorecard.json'}; comparison: {cfg.eval_out / 'comparison.txt'}")
    _record(cfg, res, mlflow=not kw.get("no_mlflow"), mlflow_uri=kw.get("mlflow_uri"))
    sys.exit(0)


#: method hyperparameter options, generated from every registered method's ``Params`` (defaults:
#: REFERENCES.md); a parameter named like one of the command's own options becomes --<method>-<name>.
METHOD_OPTIONS = plugin_options(_METHODS, reserved=option_names(defend))
_at = next(i for i, p in enumerate(defend.params) if p.name == "quiet")
defend.params[_at:_at] = click_options(METHOD_OPTIONS)


def _record(cfg: "DefendConfig", res: "DefendResult", *, mlflow: bool, mlflow_uri: str | None) -> None:
    """Reports for both scorecards, and MLflow runs for the training and both evaluations."""
    import dataclasses
    import json

    from ..pipelines.postrun import after_run

    store = cfg.eval_out if res.after is not None else cfg.ckpt_dir
    for card, sub in ((res.before, "before"), (res.after, "after")):
        if card is not None:
            extra = [cfg.eval_out / "comparison.json", cfg.eval_out / "comparison.txt"] if sub == "after" else []
            after_run(card, cfg.eval_out / sub, policy=None, baseline=None, junit=None, mlflow=False, mlflow_uri=None,
                      command=cfg.command, model_path=None, artifacts=extra, report=True)
            if mlflow:
                from ..tracking.mlflow_log import log_scorecard

                log_scorecard(card, out_dir=store, uri=mlflow_uri, artifacts=[cfg.eval_out / sub / "report.html", *extra],
                              command=cfg.command, scorecard_path=cfg.eval_out / sub / "scorecard.json")
    if mlflow:
        from ..tracking.mlflow_log import log_training

        history = [dataclasses.asdict(h) for h in res.training.history]
        hist_file = cfg.ckpt_dir / "history.json"
        hist_file.parent.mkdir(parents=True, exist_ok=True)
        hist_file.write_text(json.dumps({"selected_epoch": res.training.selected_epoch, "history": history}, indent=1))
        params = {"method": cfg.method, "model": cfg.model_spec, "data": cfg.data_spec or "", "suite": cfg.suite or "",
                  **{f"method.{k}": v for k, v in cfg.method_params.items()}, **{f"train.{k}": v for k, v in dataclasses.asdict(cfg.train).items()}}
        artifacts = [hist_file] + ([res.model_path] if Path(res.model_path).stat().st_size < 200 * 2**20 else [])
        log_training(out_dir=store, uri=mlflow_uri, name=f"defend {cfg.method} · {cfg.model_spec}", params=params, history=history,
                     tags={"robustlab.method": cfg.method, "robustlab.command": cfg.command[:5000]}, artifacts=artifacts)
