"""docker/compose.yaml and the Dockerfiles it builds: the compose file validates with the Docker
client (``docker compose config``, no daemon needed; skipped where no compose client is
installed), and, without Docker, every built service's Dockerfile exists, copies what exists,
installs the extras its command needs, runs the package's entry point, gives the image's user the
volumes it writes, and every robustlab command line in the file parses with robustlab's own CLI."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker" / "compose.yaml"
SERVICE_COMMANDS = {"serve", "worker"}


def _compose_client() -> list[str] | None:
    docker = shutil.which("docker")
    if docker is not None and subprocess.run([docker, "compose", "version"], capture_output=True, timeout=60).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy is not None else None


def _services() -> dict[str, Any]:
    out: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]
    return out


def _dockerfile(svc: dict[str, Any]) -> tuple[Path, Path]:
    build = svc["build"]
    context = (COMPOSE.parent / build["context"]).resolve()
    return context, context / build.get("dockerfile", "Dockerfile")


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text(encoding="utf-8"))
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            op, _, rest = line.partition(" ")
            rows.append((op.upper(), rest.strip()))
    return rows


def test_docker_compose_config_validates_with_the_docker_client() -> None:
    client = _compose_client()
    if client is None:
        pytest.skip("no Docker compose client installed (docker compose / docker-compose)")
    for extra in ([], ["--profile", "gpu"]):
        r = subprocess.run([*client, "-f", str(COMPOSE), *extra, "config"], capture_output=True, text=True, timeout=120, cwd=ROOT)
        assert r.returncode == 0, r.stderr
        cfg = yaml.safe_load(r.stdout)
        assert {"server", "worker", "postgres", "broker", "mlflow"} <= set(cfg["services"]), sorted(cfg["services"])
        for name, svc in cfg["services"].items():
            if "build" in svc:
                context = Path(svc["build"]["context"])
                assert (context / svc["build"].get("dockerfile", "Dockerfile")).is_file(), name


def test_every_built_service_matches_the_package() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    from robustlab.cli import main

    built = {name: svc for name, svc in _services().items() if "build" in svc}
    assert {"server", "worker", "robustlab"} <= set(built)
    for name, svc in built.items():
        context, dockerfile = _dockerfile(svc)
        assert dockerfile.is_file(), f"{name}: {dockerfile} is missing"
        rows = _instructions(dockerfile)
        for op, args in rows:
            if op == "COPY" and not args.startswith("--from"):
                *sources, _dest = shlex.split(args)
                for src in sources:
                    assert (context / src).exists(), f"{dockerfile.name}: COPY {src}: not in the build context"
        entry = [args for op, args in rows if op == "ENTRYPOINT"]
        assert entry and yaml.safe_load(entry[-1])[0] in scripts, f"{dockerfile.name}: the entry point is not a console script of the package"
        argv = shlex.split(svc.get("command", ""))
        if not argv:
            continue
        cmd = main.get_command(click.Context(main), argv[0])
        assert cmd is not None, f"{name}: `robustlab {argv[0]}` is not a command"
        cmd.make_context(argv[0], argv[1:])  # raises on an unknown option or a bad value
        if argv[0] in SERVICE_COMMANDS:
            pips = " ".join(args for op, args in rows if op == "RUN" and "pip install" in args)
            assert "[service]" in pips, f"{name} runs `robustlab {argv[0]}` but {dockerfile.name} does not install the service extra"
            user_setup = " ".join(args for op, args in rows if op == "RUN")
            for vol in svc.get("volumes", []):
                target = vol.split(":")[1]
                assert re.search(rf"chown [^&]*{re.escape(target)}\b", user_setup), f"{dockerfile.name}: the image's user cannot write the volume {target}"
