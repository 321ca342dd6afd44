"""``robustlab suites | models | datasets``: what is available, one line each."""

from __future__ import annotations

import click


@click.command("suites")
def suites() -> None:
    """List the built-in suites and their checks."""
    from ..suite import builtin_suites
    from ..yamlio import safe_load_strict

    for name, path in builtin_suites().items():
        doc = safe_load_strict(path.read_text()) or {}
        checks = ", ".join(str(e.get("id") or e.get("check")) if isinstance(e, dict) else str(e) for e in doc.get("checks", []))
        click.echo(f"{name:<10} {doc.get('description', '')}")
        click.echo(f"{'':<10} checks: {checks}")


@click.command("models")
def models() -> None:
    """List model spec prefixes and the bundled zoo models."""
    from ..models.loaders import prefixes
    from ..models.zoo import ZOO

    click.echo("Model specs (a bare file path is sniffed):")
    for p, d in prefixes().items():
        click.echo(f"  {p + ':':<14} {d}")
    click.echo("Bundled zoo models:")
    for n, e in ZOO.items():
        click.echo(f"  zoo:{n:<18} {e.description}")


@click.command("datasets")
def datasets() -> None:
    """List data specs."""
    from ..data import DATASETS

    for n, p in DATASETS.items():
        desc = getattr(p, "description", "third-party plugin")
        click.echo(f"  {n:<14} {desc}")
