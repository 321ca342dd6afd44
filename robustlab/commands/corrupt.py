"""``robustlab corrupt``: render a data set under a corruption protocol to a CIFAR-10-C style folder."""

from __future__ import annotations

from typing import Any

import click

from .common import user_errors, integer


@click.command("corrupt")
@click.option("--data", "data_spec", required=True, help="Data spec to corrupt (see `robustlab datasets`), e.g. npz:cifar10_test.npz.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder to write (<corruption>.npy, labels.npy, ids.json, manifest.json).")
@click.option("--protocol", type=click.Choice(["auto", "imagenet-c", "cifar-c", "cifar-c-small"]), default="auto", show_default=True, help="Corruption protocol; auto: cifar-c for 32x32, imagenet-c for sides >= 64, cifar-c-small otherwise.")
@click.option("--corruptions", default="all", show_default=True, help="Comma-separated names, or the groups all / benchmark / held_out.")
@click.option("--seed", type=integer(), default=0, show_default=True, help="Run seed; image seeds derive from (seed, corruption, severity, sample id) as in `robustlab evaluate`.")
@click.option("--backend", type=click.Choice(["fast", "reference"]), default="fast", show_default=True)
@click.option("--device", default="cpu", show_default=True, help="Device of the fast backend (cpu, auto, cuda, cuda:1, mps).")
@click.option("--batch-size", type=integer(1), default=256, show_default=True)
@click.option("--data-root", default=None, type=click.Path(file_okay=False), help="Folder of torchvision data sets.")
@click.option("--limit", type=integer(1), default=None, help="Only the first N samples.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
@user_errors
def corrupt(**kw: Any) -> None:
    """Render DATA under a corruption protocol into OUT in the CIFAR-10-C layout (resumable)."""
    from ..corruptions.engine import check_name
    from ..corruptions.names import expand
    from ..corruptions.writer import render
    from ..data.plugins import load_dataset

    from ..errors import set_crash_dir
    from ..runner import resolve_device

    set_crash_dir(kw["out_dir"])  # a crash log goes beside the output, as other commands' do
    device = str(resolve_device(kw["device"]))  # an unknown or absent device is a usage error before any work
    names = list(dict.fromkeys(check_name(n) for n in expand([p.strip() for p in str(kw["corruptions"]).split(",") if p.strip()])))
    if not names:  # as a suite's empty corruptions list is refused: nothing to render is a usage error
        raise click.BadParameter("names no corruption; give comma-separated corruption names (e.g. fog,snow) or a group: all, benchmark, held_out.", param_hint="--corruptions")
    data = load_dataset(kw["data_spec"], split="test", root=kw["data_root"]).limit(kw["limit"])
    say = (lambda msg: None) if kw["quiet"] else (lambda msg: click.echo(msg, err=True))
    from pathlib import Path

    from ..store import OutputLock

    with OutputLock(Path(kw["out_dir"]).expanduser(), command="robustlab corrupt"):  # two renders into one folder raced on its blocks
        path = render(
            data, kw["out_dir"], corruptions=names, protocol=kw["protocol"], backend=kw["backend"], seed=kw["seed"],
            batch_size=kw["batch_size"], device=device, progress=say,
        )
    click.echo(f"wrote {len(names)} corruptions x 5 severities of {len(data)} images to {path.parent} (manifest {path.name})")
