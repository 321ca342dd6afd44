"""Command line interface (click).

``robustlab --help`` imports neither torch nor mlflow: every command lives in its own module under
``robustlab.commands`` and is imported only when invoked. Errors a user can cause become one line on
stderr and exit code 2 (see :mod:`robustlab.errors`); ``--debug`` shows the traceback.

Exit codes: 0 success, 1 a release gate failed, 2 usage or input error, 3 inconclusive.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
from typing import Any

import click

from . import __version__

#: command name -> (module, function, one-line help). Modules are imported lazily.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "evaluate": ("robustlab.commands.evaluate", "evaluate", "Evaluate a model with a suite and write a scorecard."),
    "corrupt": ("robustlab.commands.corrupt", "corrupt", "Render data under a corruption protocol to a CIFAR-10-C style folder."),
    "certify": ("robustlab.commands.certify", "certify", "Certify L2 robustness by randomized smoothing."),
    "defend": ("robustlab.commands.defend", "defend", "Train a sturdier model (adversarial training, AugMix, noise)."),
    "report": ("robustlab.commands.report", "report", "Render a scorecard as a self-contained HTML report."),
    "gate": ("robustlab.commands.report", "gate", "Apply a release-gate policy to a scorecard."),
    "compare": ("robustlab.commands.report", "compare", "Show what moved between two scorecards."),
    "sign": ("robustlab.commands.report", "sign", "Sign a scorecard (Ed25519)."),
    "verify": ("robustlab.commands.report", "verify", "Verify a signed scorecard against its model file."),
    "suites": ("robustlab.commands.listing", "suites", "List the available suites."),
    "models": ("robustlab.commands.listing", "models", "List model spec prefixes and bundled zoo models."),
    "datasets": ("robustlab.commands.listing", "datasets", "List data specs."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return [n for n, (mod, _f, _h) in COMMANDS.items() if importlib.util.find_spec(mod) is not None]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        mod, fn, _h = COMMANDS[name]
        if importlib.util.find_spec(mod) is None:
            return None
        cmd: click.Command = getattr(importlib.import_module(mod), fn)
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(n, COMMANDS[n][2]) for n in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        debug = bool(ctx.params.get("debug")) or os.environ.get("ROBUSTLAB_DEBUG") == "1"
        from .errors import RobustlabError

        try:
            return super().invoke(ctx)
        except RobustlabError as exc:
            if debug:
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted; completed batches are kept: rerun with --resume to continue.", err=True)
            ctx.exit(130)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="robustlab")
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug logs).")
@click.pass_context
def main(ctx: click.Context, debug: bool, verbose: int) -> None:
    """robustlab: robustness evaluation and certification for image classifiers.

    Exit codes: 0 success, 1 a release gate failed, 2 usage or input error, 3 inconclusive.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    if debug:
        os.environ["ROBUSTLAB_DEBUG"] = "1"
    if not verbose:
        import warnings

        for cat in (FutureWarning, DeprecationWarning, UserWarning):
            warnings.filterwarnings("ignore", category=cat)
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    plog = logging.getLogger("robustlab.progress")
    if not plog.handlers:
        h = logging.StreamHandler(sys.stderr)
        h.setFormatter(logging.Formatter("%(message)s"))
        plog.addHandler(h)
        plog.setLevel(logging.INFO)
        plog.propagate = False


if __name__ == "__main__":  # pragma: no cover
    main()
