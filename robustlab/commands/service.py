"""``robustlab serve``, ``robustlab worker``, ``robustlab submit`` and ``robustlab push``: the
service and its clients (the server side lives in :mod:`robustlab.service`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import RobustlabError
from .common import user_errors, integer, number


#: what ``serve`` and ``worker`` import, with the pip name (python-multipart parses the UI's forms)
_SERVER_MODULES = (("fastapi", "fastapi"), ("uvicorn", "uvicorn"), ("sqlalchemy", "sqlalchemy"), ("alembic", "alembic"),
                   ("python_multipart", "python-multipart>=0.0.13"))


def _require_server_extra(command: str, modules: tuple[tuple[str, str], ...] = _SERVER_MODULES) -> None:
    """One line and exit 2 when the ``[service]`` extra is missing, before anything starts (a plain
    ``pip install robustlab`` has FastAPI through MLflow but not the form parser)."""
    import importlib

    missing = []
    for module, pip_name in modules:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(pip_name)
    if missing:
        raise RobustlabError(f"robustlab {command} needs the service extra ({', '.join(missing)} missing): pip install 'robustlab[service]'")


def _settings(data_dir: str, database_url: str | None, **kw: Any) -> Any:
    try:
        from ..service.settings import Settings
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RobustlabError(f"the service needs its extra dependencies ({exc.name} is missing): pip install 'robustlab[service]'") from exc
    return Settings(data_dir=Path(data_dir), database_url=database_url or "", **kw)


@click.command("serve")
@click.option("--data-dir", default="robustlab-data", show_default=True, type=click.Path(file_okay=False), help="Data folder: database, artifacts, keys, MLflow store.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=integer(0, 65535), help="0 picks a free port.")
@click.option("--workers", default=2, show_default=True, type=integer(0, 64), help="Embedded worker processes on this machine.")
@click.option("--database-url", default=None, help="SQLAlchemy URL (default: SQLite in the data folder), e.g. postgresql+psycopg://u:p@host/db.")
@click.option("--max-upload-mb", default=512, show_default=True, type=integer(1), help="Largest model upload accepted.")
@click.option("--max-document-mb", default=16, show_default=True, type=integer(1), help="Largest scorecard or policy upload accepted.")
@click.option("--suite-dir", default=None, type=click.Path(file_okay=False, exists=True), help="Folder of extra suite YAML files requests may name.")
@click.option("--device", default="auto", show_default=True, help="Device of the embedded workers' runs.")
@click.option("--new-admin-token", is_flag=True, help="Print a new admin token even when one exists.")
@click.option("--queue", default=None, help="Celery broker URL (redis://host:6379/0): publish jobs there for `robustlab worker --queue` on other machines.")
@click.option("--heartbeat-timeout", default=30.0, show_default=True, type=number(1.0), help="Seconds after which a silent worker's job is retried.")
@click.option("--mlflow-uri", default=None, help="MLflow tracking store of every job (default: SQLite in the data folder).")
@user_errors
def serve(data_dir: str, host: str, port: int, workers: int, database_url: str | None, max_upload_mb: int, max_document_mb: int, suite_dir: str | None,
          device: str, new_admin_token: bool, queue: str | None, heartbeat_timeout: float, mlflow_uri: str | None) -> None:
    """Start the API, the UI and the embedded workers; print the URL and a first admin token.

    \b
    Example:
      robustlab serve --data-dir /srv/robustlab --port 8080
    """
    _require_server_extra("serve")
    import socket

    import uvicorn

    from ..service.app import create_app
    from ..service.bootstrap import first_admin_token
    from ..service.warm import pdeathsig

    st = _settings(data_dir, database_url, max_upload_bytes=max_upload_mb * 1024 * 1024, max_document_bytes=max_document_mb * 1024 * 1024, suite_dir=Path(suite_dir) if suite_dir else None,
                   queue_url=queue or "", heartbeat_timeout_s=heartbeat_timeout, mlflow_uri=mlflow_uri or "")
    app = create_app(st)
    token = first_admin_token(st, force=new_admin_token)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    url = f"http://{host}:{sock.getsockname()[1]}"
    from ..service.supervisor import Supervisor

    argv = [sys.executable, "-m", "robustlab", "worker", "--data-dir", str(st.data_dir), "--device", device, "--heartbeat-timeout", str(heartbeat_timeout),
            *(["--queue", queue] if queue else []), *(["--mlflow-uri", mlflow_uri] if mlflow_uri else []),
            *(["--database-url", database_url] if database_url else []), *(["--suite-dir", suite_dir] if suite_dir else [])]
    # the server watches its workers: a dead one is logged and started again (with a back-off), its
    # jobs queued again at once, and without --queue the server reaps stale jobs itself (with --queue
    # the requeuer does), so a job is retried even when no worker is left to do it
    sup = Supervisor(st, argv, workers, reap=not queue,
                     popen=lambda a: subprocess.Popen(a, preexec_fn=pdeathsig if sys.platform.startswith("linux") else None))  # no orphan workers if serve is killed
    sup.start_workers()
    sup.start()
    if queue:
        from ..service.queue import Requeuer

        Requeuer(st).start()
    click.echo(f"robustlab service at {url}  (API {url}/api/v1, schema {url}/api/v1/openapi.json)")
    click.echo(f"admin token: {token}" if token else "admin token: already issued (pass --new-admin-token for another)")
    click.echo(f"data folder: {st.data_dir}; {workers} embedded worker(s)", err=True)
    sys.stdout.flush()
    try:
        uvicorn.Server(uvicorn.Config(_ReadyWithWorkers(app, sup) if workers else app, log_level="warning", access_log=False)).run(sockets=[sock])
    finally:
        sup.stop()


class _ReadyWithWorkers:
    """ASGI wrapper of ``serve``'s app: ``/readyz`` answers 503 while none of the embedded workers is
    alive (between a crash and its restart), since jobs submitted then only queue; otherwise the
    app's own answer (database reachable and migrated)."""

    def __init__(self, app: Any, supervisor: Any) -> None:
        self.app, self.supervisor = app, supervisor

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path") == "/readyz" and not self.supervisor.ready():
            from starlette.responses import JSONResponse

            detail = f"none of the {self.supervisor.n} embedded worker(s) is running (being started again); jobs stay queued until one is"
            await JSONResponse({"status": "unavailable", "detail": detail}, status_code=503, headers={"Retry-After": "5"})(scope, receive, send)
            return
        await self.app(scope, receive, send)


@click.command("worker")
@click.option("--data-dir", default="robustlab-data", show_default=True, type=click.Path(file_okay=False), help="The server's data folder (shared artifacts).")
@click.option("--database-url", default=None, help="The server's database URL (default: SQLite in the data folder).")
@click.option("--queue", default=None, help="Celery broker URL (redis://host:6379/0) of the server's --queue: take jobs from it (workers on other machines).")
@click.option("--suite-dir", default=None, type=click.Path(file_okay=False, exists=True), help="The server's --suite-dir.")
@click.option("--device", default="auto", show_default=True)
@click.option("--max-jobs", default=None, type=integer(1), help="Exit after this many jobs.")
@click.option("--heartbeat-timeout", default=30.0, show_default=True, type=number(1.0), help="Seconds after which a silent worker's job is retried.")
@click.option("--mlflow-uri", default=None, help="The server's --mlflow-uri.")
@user_errors
def worker(data_dir: str, database_url: str | None, queue: str | None, suite_dir: str | None, device: str, max_jobs: int | None, heartbeat_timeout: float,
           mlflow_uri: str | None) -> None:
    """Take jobs from the service's queue and run each in its own process."""
    _require_server_extra("worker", (("sqlalchemy", "sqlalchemy"), ("alembic", "alembic")) + ((("celery", "celery[redis]"),) if queue else ()))
    from ..service.worker import Worker

    st = _settings(data_dir, database_url, suite_dir=Path(suite_dir) if suite_dir else None, heartbeat_timeout_s=heartbeat_timeout, queue_url=queue or "",
                   mlflow_uri=mlflow_uri or "")
    if queue:
        if max_jobs is not None:
            raise click.BadParameter("--max-jobs applies to database-polling workers, not to --queue workers", param_hint="--max-jobs")
        from ..service.queue import run_worker

        run_worker(st, device=device)
        return
    try:
        Worker(st, device=device).run_forever(max_jobs=max_jobs)
    except KeyboardInterrupt:
        pass


@click.command("submit")
@click.option("--server", envvar="ROBUSTLAB_SERVER", required=True, help="Service URL (or $ROBUSTLAB_SERVER).")
@click.option("--token", envvar="ROBUSTLAB_TOKEN", required=True, help="API token (or $ROBUSTLAB_TOKEN).")
@click.option("--model", "model_spec", required=True, help="A .safetensors / state-dict file (with --arch), or zoo:NAME.")
@click.option("--arch", default=None, help="Architecture of a weights file: zoo-arch:NAME, torchvision:NAME or timm:NAME.")
@click.option("--suite", default="quick", show_default=True, help="A suite the service offers (built-in names, or the operator's).")
@click.option("--policy", type=click.Path(dir_okay=False, exists=True), default=None, help="Release-gate policy YAML.")
@click.option("--baseline", default=None, help="Baseline: a job id or a version of the same model.")
@click.option("--project", default=None, help="Project (default: the token's).")
@click.option("--name", "model_name", default=None, help="Model name in the project (default: the file's stem or zoo name).")
@click.option("--version", "version", default=None, help="Version name (default: the first 12 hex of the file's sha256, or the zoo name).")
@click.option("--limit", type=integer(1), default=None, help="Evaluate only the first N samples.")
@click.option("--seed", type=integer(), default=0, show_default=True)
@click.option("--data", default=None, help="A built-in data set name (default: the model's).")
@click.option("--gpus", type=integer(0, 16), default=0, show_default=True, help="GPUs for the job (more than one runs under torchrun).")
@click.option("--no-wait", is_flag=True, help="Print the job id and exit 0 without waiting.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines.")
@user_errors
def submit(**kw: Any) -> None:
    """Submit an evaluation to a robustlab service; wait and exit with the gate's code (0/1/2/3).

    \b
    Example:
      robustlab submit --server http://host:8080 --token $T --model zoo:digits-cnn --suite quick --policy gate.yaml
    """
    from ..service.client import Client, submit_and_wait

    sys.exit(submit_and_wait(Client(kw.pop("server"), kw.pop("token")), **kw))


@click.command("push")
@click.argument("scorecard", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--server", envvar="ROBUSTLAB_SERVER", required=True, help="Service URL (or $ROBUSTLAB_SERVER).")
@click.option("--token", envvar="ROBUSTLAB_TOKEN", required=True, help="API token (or $ROBUSTLAB_TOKEN).")
@click.option("--signature", "signature_path", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Detached signature [default: SCORECARD.sig when present].")
@click.option("--project", default=None, help="Project (default: the token's).")
@click.option("--name", "model_name", default=None, help="Model name to file it under.")
@click.option("--version", "version", default=None, help="Version to file it under.")
@user_errors
def push(scorecard: Path, server: str, token: str, signature_path: Path | None, project: str | None, model_name: str | None, version: str | None) -> None:
    """Upload a scorecard made elsewhere; the service verifies its signature against its trust store."""
    from ..service.client import Client

    sig = signature_path or (scorecard.with_name(scorecard.name + ".sig") if scorecard.with_name(scorecard.name + ".sig").is_file() else None)
    c = Client(server, token)
    out = c.push(scorecard, sig, project=project, model_name=model_name, version=version)
    click.echo(f"stored scorecard {out['id']}: signature {out['signature_state']} ({out['signature_message']})")
    if os.environ.get("ROBUSTLAB_DEBUG") == "1":
        click.echo(str(out), err=True)


@click.group("admin")
@click.option("--server", envvar="ROBUSTLAB_SERVER", required=True, help="Service URL (or $ROBUSTLAB_SERVER).")
@click.option("--token", envvar="ROBUSTLAB_TOKEN", required=True, help="An admin token (or $ROBUSTLAB_TOKEN).")
@click.pass_context
def admin(ctx: click.Context, server: str, token: str) -> None:
    """Administer a service: projects, tokens, the trust store.

    \b
    Examples:
      robustlab admin --server URL --token ADMIN project vision
      robustlab admin --server URL --token ADMIN token ci-bot --role submitter --project vision
      robustlab admin --server URL --token ADMIN trust team.pub.pem --name team
    """
    from ..service.client import Client

    ctx.obj = Client(server, token)


@admin.command("project")
@click.argument("name")
@click.pass_obj
@user_errors
def admin_project(client: Any, name: str) -> None:
    """Create a project."""
    out = client.request("POST", "/projects", json={"name": name})
    click.echo(f"project {out['name']} created")


@admin.command("token")
@click.argument("name")
@click.option("--role", type=click.Choice(["admin", "submitter", "auditor"]), required=True)
@click.option("--project", default=None, help="The project (required for submitter and auditor tokens).")
@click.pass_obj
@user_errors
def admin_token(client: Any, name: str, role: str, project: str | None) -> None:
    """Create a token; prints it once (only its hash is stored)."""
    out = client.request("POST", "/tokens", json={"name": name, "role": role, "project": project})
    click.echo(out["token"])


@admin.command("trust")
@click.argument("public_key", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--name", required=True, help="A name for the key's owner.")
@click.pass_obj
@user_errors
def admin_trust(client: Any, public_key: Path, name: str) -> None:
    """Add a signer's Ed25519 public key (.pub.pem) to the service's trust store."""
    out = client.request("POST", "/trusted-keys", json={"name": name, "public_key_pem": public_key.read_text(encoding="ascii", errors="replace")})
    click.echo(f"trusted key {out['key_id']} ({out['name']})")
