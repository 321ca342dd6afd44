"""Click options and helpers shared by the commands that load a model and data."""

from __future__ import annotations

import functools
import math
import re
import shlex
import sys
import typing
from pathlib import Path
from typing import Any, Callable

import click

from ..errors import RobustlabError


def _read(kind: "click.ParamType[Any, Any]", value: Any, param: click.Parameter | None, ctx: click.Context | None, *, integer: bool) -> Any:
    """What the numeric option types share: a string is read by ``robustlab.parsing`` (``parse_fraction``
    for numbers, so ``--sigma 64/255`` is the fraction it says, as ``--radii`` and ``--eps`` always were;
    ``parse_integer`` for counts, so ``--n 1e5`` is 100000), and a misreading is a one-line usage error:
    ``0_5``, which Python's ``float`` and ``int`` read as 5, ``nan``, ``1.5e0`` for a count."""
    if not isinstance(value, str):
        return value
    from ..parsing import parse_fraction, parse_integer

    try:
        return parse_integer(value) if integer else parse_fraction(value)
    except ValueError as exc:
        example = "an integer such as 100000 or 1e5" if integer else "a number such as 0.25 or 1e-3, or a fraction such as 64/255"
        kind.fail(f"{exc}; write {example}.", param, ctx)


class _Reads:
    """Mixin of the numeric option types: the string is read by :func:`_read` before click's own type
    (and range) conversion; ``integer`` picks counts or numbers."""

    integer = False

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        return super().convert(_read(typing.cast("click.ParamType[Any, Any]", self), value, param, ctx, integer=self.integer), param, ctx)  # type: ignore[misc]


class _Number(_Reads, click.types.FloatParamType):
    name = "number"


class _NumberRange(_Reads, click.FloatRange):
    name = "number"


class _Integer(_Reads, click.types.IntParamType):
    name = "integer"
    integer = True


class _IntegerRange(_Reads, click.IntRange):
    name = "integer"
    integer = True


def number(min: float | None = None, max: float | None = None) -> "click.ParamType[Any, Any]":
    """A float option that takes ``0.25``, ``1e-3`` or ``64/255`` (within ``[min, max]`` when given)."""
    return _Number() if min is None and max is None else _NumberRange(min, max)


def integer(min: int | None = None, max: int | None = None) -> "click.ParamType[Any, Any]":
    """An integer option that takes ``100000`` or ``1e5`` (within ``[min, max]`` when given)."""
    return _Integer() if min is None and max is None else _IntegerRange(min, max)


def float_list_option(value: str | None, name: str, n: int | None = None) -> tuple[float, ...] | None:
    if value is None:
        return None
    from ..parsing import parse_fraction

    try:  # blanks around an item are fine, blanks inside one are not: "1 5" is not 15
        out = tuple(parse_fraction(v) for v in value.split(",") if v.strip())
    except ValueError as exc:
        raise click.BadParameter(f"{name} takes comma-separated numbers, e.g. 0.5,0.5,0.5; got {value!r}") from exc
    if not out or not all(math.isfinite(v) for v in out):
        raise click.BadParameter(f"{name} takes comma-separated finite numbers, e.g. 0.5,0.5,0.5; got {value!r}")
    if n is not None and len(out) != n:
        raise click.BadParameter(f"{name} takes {n} numbers, got {len(out)}")
    return out


def model_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--model SPEC and the metadata overrides (CLI wins over sidecar files and plugins)."""
    opts = [
        click.option("--model", "model_spec", required=True, help="Model spec: a file, zoo:NAME, factory:pkg.mod:fn, torchvision:NAME, ... (see `robustlab models`)."),
        click.option("--arch", default=None, help="Architecture for a state dict: torchvision:NAME, timm:NAME, zoo-arch:NAME or factory:pkg.mod:fn."),
        click.option("--trust-code", is_flag=True, help="Allow formats that can run code: TorchScript, torch.export, pickled modules. Recorded in the scorecard."),
        click.option("--num-classes", type=integer(2), default=None, help="Number of classes, at least 2 (else inferred)."),
        click.option("--bounds", default=None, help="Input range the model expects, e.g. 0,1 or 0,255."),
        click.option("--mean", default=None, help="Per-channel normalisation mean applied inside the model, e.g. 0.485,0.456,0.406."),
        click.option("--std", default=None, help="Per-channel normalisation std."),
        click.option("--input-shape", default=None, help="C,H,W, e.g. 3,32,32."),
        click.option("--class-names", default=None, help="Comma-separated class names."),
        click.option("--feature-layer", default=None, help="Module whose output is the penultimate feature (default: input of the last Linear)."),
        click.option("--model-dir", default=None, type=click.Path(file_okay=False), help="Folder of model zoo weights (robustbench:)."),
        click.option("--download", is_flag=True, help="Allow downloading weights or data sets (off by default)."),
        click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def data_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--data", "data_spec", default=None, help="Data spec (see `robustlab datasets`); default: the model's own data set."),
        click.option("--data-root", default=None, type=click.Path(file_okay=False), help="Folder of torchvision data sets (cifar10, svhn, ...)."),
        click.option("--dataset", "dataset_name", default=None, help="Name the data set once (cifar10, cifar100, imagenet, mnist, fashion-mnist, digits, svhn): sets the attack budgets and the corruption protocol of npz:/folder: data and --arch models."),
        click.option("--limit", type=integer(), default=None, help="Evaluate only the first N samples."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def run_options(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False), help="Output folder (default reports/<model>-<suite>)."),
        # a 64-bit seed: torch's generators and pyautoattack's reference engine take the run seed as it is (2**64 overflowed in Square, exit 3)
        click.option("--seed", type=integer(-(2**63), 2**63 - 1), default=0, show_default=True,
                     help="Seed of all randomness, a 64-bit integer; the same seed gives the same scorecard."),
        click.option("--batch-size", type=integer(1), default=128, show_default=True),
        click.option("--resume", is_flag=True, help="Reuse the batch results stored in OUT by an interrupted run."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bars or summary table."),
        click.option("--json", "as_json", is_flag=True, help="Print the scorecard JSON on stdout."),
        click.option("--threads", type=integer(1), default=None, help="CPU threads for torch (default: torch's choice; 1 is often fastest for small models)."),
        click.option("--precision", type=click.Choice(["fp32", "tf32", "bf16"]), default="fp32", show_default=True, help="Fast path: tf32 matmuls (GPUs), or bf16 autocast for attack iterations (GPUs, and CPUs with bf16 in hardware: AVX-512 BF16 or AMX; results re-verified in fp32)."),
        click.option("--channels-last", is_flag=True, help="GPU fast path: NHWC memory format."),
        click.option("--compile", "compile_model", is_flag=True, help="GPU fast path: torch.compile the network."),
        click.option("--no-fold-bn", is_flag=True, help="Attack iterations run on the model itself, not on its copy with batch norms folded into the convolutions (the same function up to rounding, ~20% faster gradients on a CPU; verdicts are always the model's)."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def load_options_from(kw: dict[str, Any]) -> Any:
    from ..models import LoadOptions

    shape = float_list_option(kw.get("input_shape"), "--input-shape", 3)
    if shape is not None and not all(s == int(s) and 1 <= s <= 100_000 for s in shape):
        raise click.BadParameter(f"--input-shape takes three positive integers C,H,W, e.g. 3,32,32; got {kw.get('input_shape')!r}")
    device = kw.get("device") or "auto"
    if not re.fullmatch(r"auto|cpu|mps|(cuda|xpu)(:\d{1,3})?", device):
        raise click.BadParameter(f"--device takes auto, cpu, cuda or cuda:N; got {device!r}")
    overrides = {
        "num_classes": kw.get("num_classes"),
        "bounds": float_list_option(kw.get("bounds"), "--bounds", 2),
        "mean": float_list_option(kw.get("mean"), "--mean"),
        "std": float_list_option(kw.get("std"), "--std"),
        "input_shape": tuple(int(s) for s in shape) if shape else None,
        "class_names": tuple(c.strip() for c in kw["class_names"].split(",")) if kw.get("class_names") is not None else None,
        "feature_layer": kw.get("feature_layer"),
    }
    b = overrides["bounds"]
    if b is not None and not b[0] < b[1]:
        raise click.BadParameter("--bounds needs LOW,HIGH with LOW < HIGH")
    return LoadOptions(arch=kw.get("arch"), trust_code=bool(kw.get("trust_code")), download=bool(kw.get("download")),
                       model_dir=kw.get("model_dir"), device=device, overrides={k: v for k, v in overrides.items() if v is not None})


def default_out_dir(model_spec: str, suite: str) -> Path:
    import re

    stem = Path(model_spec.split(":", 1)[-1]).stem if ":" in model_spec or Path(model_spec).suffix else model_spec
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{stem}-{Path(suite).stem}").strip("-")
    return Path("reports") / name


def command_line() -> str:
    """The command as typed, for scorecards, reports and MLflow, with URL passwords redacted."""
    from ..parsing import redact_credentials

    return redact_credentials("robustlab " + " ".join(shlex.quote(a) for a in sys.argv[1:]))


def user_errors(f: Callable[..., Any]) -> Callable[..., Any]:
    """Turn click's BadParameter into exit code 2 with one line (click already does), and keep
    RobustlabError propagation to the group handler."""

    @functools.wraps(f)
    def wrapper(*a: Any, **kw: Any) -> Any:
        try:
            return f(*a, **kw)
        except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            raise RobustlabError(f"{exc.strerror}: {exc.filename}; check the path.") from exc

    return wrapper


def run_settings(kw: dict[str, Any]) -> dict[str, Any]:
    """The RunConfig fields that come from ``run_options`` (shared by evaluate, certify, defend)."""
    return {
        "seed": kw["seed"], "batch_size": kw["batch_size"], "resume": bool(kw.get("resume")), "quiet": bool(kw.get("quiet")),
        "threads": kw.get("threads"), "precision": kw.get("precision") or "fp32", "channels_last": bool(kw.get("channels_last")),
        "compile": bool(kw.get("compile_model")), "fold_bn": not kw.get("no_fold_bn"), "command": command_line(),
    }


def output_lock(out: Path, command: str = "") -> Any:
    """Lock the output folder for a whole command (a no-op on non-zero torchrun ranks, which lock
    their own per-rank file in the runner) and name it as the place for a crash log."""
    import contextlib

    from ..distributed import from_env
    from ..errors import set_crash_dir
    from ..store import OutputLock

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RobustlabError(f"--out {out} is a file, not a folder; pass a folder path.")
    set_crash_dir(out)
    if not from_env().is_main:
        return contextlib.nullcontext()
    return OutputLock(out, command=command)


def check_output_path(path: str | Path | None, flag: str) -> None:
    """Refuse before the run an output path that cannot be created because a part of it is a file."""
    if path is None:
        return
    p = Path(path)
    for parent in [p, *p.parents] if flag == "--out" else list(p.parents):
        if parent.exists():
            if not parent.is_dir():
                raise RobustlabError(f"{flag} {p}: {parent} is a file, not a folder; pass another path.")
            break
