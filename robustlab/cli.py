"""Command line interface (click).

``robustlab --help`` imports neither torch nor mlflow: every command lives in its own module under
``robustlab.commands`` and is imported only when invoked. Errors a user can cause become one line on
stderr and exit code 2 (see :mod:`robustlab.errors`); ``--debug`` shows the traceback.

Exit codes: 0 success, 1 a release gate failed, 2 usage or input error, 3 inconclusive, 4 internal error
(a robustlab bug: one line on stderr, the traceback in ``OUT/crash-*.log``).
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
    "compress": ("robustlab.commands.compress", "compress", "Write a compressed variant (fp16, bf16, int8, pruned) that loads without --trust-code."),
    "defend": ("robustlab.commands.defend", "defend", "Train a sturdier model (adversarial training, AugMix, noise)."),
    "report": ("robustlab.commands.report", "report", "Render a scorecard as a self-contained HTML report."),
    "gate": ("robustlab.commands.report", "gate", "Apply a release-gate policy to a scorecard."),
    "compare": ("robustlab.commands.report", "compare", "Show what moved between two scorecards."),
    "sign": ("robustlab.commands.report", "sign", "Sign a scorecard (Ed25519)."),
    "verify": ("robustlab.commands.report", "verify", "Verify a signed scorecard against its model file."),
    "suites": ("robustlab.commands.listing", "suites", "List the available suites."),
    "models": ("robustlab.commands.listing", "models", "List model spec prefixes and bundled zoo models."),
    "datasets": ("robustlab.commands.listing", "datasets", "List data specs."),
    "serve": ("robustlab.commands.service", "serve", "Start the robustlab service (API, UI, embedded workers)."),
    "worker": ("robustlab.commands.service", "worker", "Run a service worker that takes queued jobs."),
    "submit": ("robustlab.commands.service", "submit", "Submit an evaluation to a service; exit with the gate's code."),
    "push": ("robustlab.commands.service", "push", "Upload a scorecard to a service (its signature is verified)."),
    "admin": ("robustlab.commands.service", "admin", "Administer a service: projects, tokens, trusted keys."),
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

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """Like click's standalone mode, but every usage error is one line on stderr (exit 2)."""
        if not kwargs.pop("standalone_mode", True):  # an embedding caller handles exceptions itself
            return super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[call-overload]
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)  # type: ignore[call-overload]
        except click.exceptions.ClickException as exc:
            hint = f" (see `{exc.ctx.command_path} --help`)" if isinstance(exc, click.exceptions.UsageError) and exc.ctx is not None else ""
            click.echo(f"error: {' '.join(exc.format_message().split())}{hint}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            click.echo("aborted.", err=True)
            sys.exit(130)
        sys.exit(rv if isinstance(rv, int) else 0)

    def invoke(self, ctx: click.Context) -> Any:
        debug = bool(ctx.params.get("debug")) or os.environ.get("ROBUSTLAB_DEBUG") == "1"
        from .errors import EXIT_INTERNAL, RobustlabError, set_crash_dir, user_error_from

        set_crash_dir(None)  # a command that has an output folder names it

        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            click.echo(f"interrupted; {_resume_hint(ctx)}", err=True)
            ctx.exit(130)
        except Exception as exc:  # noqa: BLE001 - the one place that turns every failure into an exit code
            if debug:
                raise
            err = exc if isinstance(exc, RobustlabError) else user_error_from(exc)
            if err is not None:
                click.echo(f"error: {err}", err=True)
                ctx.exit(err.exit_code)
            log_path = _crash_log(exc)
            click.echo(f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}; this is a robustlab bug, "
                       f"please report it with the crash log {log_path} (rerun with --debug for the traceback here).", err=True)
            ctx.exit(EXIT_INTERNAL)


def _resume_hint(ctx: click.Context) -> str:
    """What an interrupted command kept and how to continue it: only commands with ``--resume`` take it
    (``corrupt`` continues when rerun as it was; ``compress`` writes its file only at the end)."""
    name = ctx.invoked_subcommand or ""
    cmd = ctx.command.get_command(ctx, name) if isinstance(ctx.command, click.Group) else None
    if cmd is not None and any(p.name == "resume" for p in cmd.params):
        kept = "completed epochs (and evaluation batches) are kept" if name == "defend" else "completed batches are kept"
        return f"{kept}: rerun with --resume to continue."
    if name == "corrupt":
        return "completed (corruption, severity) blocks are kept: rerun the same command to continue."
    return "rerun the command to start again."


def _crash_log(exc: BaseException) -> str:
    """Write the traceback to ``crash-<time>.log`` in the run's output folder (else the temp folder)."""
    import tempfile
    import time
    import traceback
    from pathlib import Path

    from .errors import crash_dir

    text = f"robustlab {__version__}\ncommand: {' '.join(sys.argv)}\n\n" + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    name = f"crash-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.log"
    for folder in (crash_dir(), Path(tempfile.gettempdir())):
        if folder is None:
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / name
            path.write_text(text, encoding="utf-8", errors="backslashreplace")
            return ascii(str(path))[1:-1]
        except OSError:
            continue
    return "(none: no writable folder)"


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="robustlab")
@click.option("--debug", is_flag=True, help="Show full tracebacks.")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug logs).")
@click.pass_context
def main(ctx: click.Context, debug: bool, verbose: int) -> None:
    """robustlab: robustness evaluation and certification for image classifiers.

    Exit codes: 0 success, 1 a release gate failed, 2 usage or input error, 3 inconclusive,
    4 internal error (a robustlab bug; the traceback is in OUT/crash-*.log).
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    from .memory import bound_heap_growth

    bound_heap_growth()  # before torch loads: peak memory must not grow over a long run (issue 21)
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
