"""The HTTP client of ``robustlab submit`` and ``robustlab push`` (httpx)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from ..errors import RobustlabError
from ..signing import sha256_file

log = logging.getLogger("robustlab.progress")
RETRY_503_S = 120.0
#: the start of the service's 409 answer to a race between two requests (app.py), which the client retries
CONCURRENT = "a concurrent request changed the same record"


class ServiceError(RobustlabError):
    """The service refused the request or cannot be reached (exit 2)."""


class Client:
    def __init__(self, server: str, token: str, *, timeout: float = 60.0) -> None:
        try:
            import httpx
        except ImportError as exc:  # pragma: no cover
            raise ServiceError("the service client needs httpx: pip install 'robustlab[service]'") from exc
        if not server.startswith(("http://", "https://")):
            raise ServiceError(f"--server {server[:80]!r} must be an http:// or https:// URL")
        if not token or not token.isascii() or not token.isprintable() or any(ch.isspace() for ch in token):
            raise ServiceError("--token is not an API token (printable ASCII, no spaces: rl_...); pass the token an admin gave you")
        self.server = server.rstrip("/")
        try:
            self.http = httpx.Client(base_url=self.server + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=timeout)
        except (httpx.InvalidURL, ValueError) as exc:
            raise ServiceError(f"--server {server[:80]!r} is not a valid URL ({' '.join(str(exc).split())[:100]}); pass e.g. http://host:8080") from exc

    def request(self, method: str, path: str, **kw: Any) -> Any:
        """JSON of a successful call; 503 is retried (the database or queue comes back), any other
        error becomes a :class:`ServiceError` with the server's message."""
        import httpx

        deadline = time.monotonic() + RETRY_503_S
        races = 0
        while True:
            for f in (kw.get("files") or {}).values():
                if hasattr(f[1], "seek"):
                    f[1].seek(0)
            try:
                r = self.http.request(method, path, **kw)
            except httpx.HTTPError as exc:
                raise ServiceError(f"cannot reach the service at {self.server} ({type(exc).__name__}: {exc}); check --server") from exc
            if r.status_code == 503 and time.monotonic() < deadline:
                log.info("service unavailable (%s); retrying", _detail(r))
                time.sleep(2)
                continue
            if r.status_code == 409 and _detail(r).startswith(CONCURRENT) and races < 3:
                races += 1  # another request made the same record at the same moment (parallel CI jobs): nothing was changed
                log.info("%s; retrying", _detail(r))
                time.sleep(0.2 * races)
                continue
            if r.status_code >= 400:
                raise ServiceError(f"the service refused {method} {path} ({r.status_code}): {_detail(r)}")
            try:
                return r.json() if r.content else None
            except ValueError:  # an HTML page or other text: --server names another web server, or a path inside one
                raise ServiceError(f"{self.server} answered {method} /api/v1{path} with something other than JSON; "
                                   "check that --server is the robustlab service's root URL (as `robustlab serve` prints it)") from None

    def whoami(self) -> dict[str, Any]:
        out = self.request("GET", "/whoami")
        if not isinstance(out, dict):
            raise ServiceError(f"{self.server} answered GET /api/v1/whoami with no robustlab identity; check that --server is the robustlab service's root URL")
        return out

    def project(self, project: str | None) -> str:
        if project:
            return project
        p = self.whoami().get("project")
        if not p:
            raise ServiceError("this admin token belongs to no project; pass --project")
        return str(p)

    def push(self, scorecard: Path, signature: Path | None, *, project: str | None, model_name: str | None, version: str | None) -> dict[str, Any]:
        proj = self.project(project)
        data = {k: v for k, v in (("model_name", model_name), ("version", version)) if v}
        with open(scorecard, "rb") as f:
            files: dict[str, Any] = {"scorecard": ("scorecard.json", f, "application/json")}
            sig = open(signature, "rb") if signature else None
            try:
                if sig is not None:
                    files["signature"] = ("scorecard.json.sig", sig, "application/json")
                out: dict[str, Any] = self.request("POST", f"/projects/{proj}/scorecards", data=data, files=files)
            finally:
                if sig is not None:
                    sig.close()
        return out


def _detail(r: Any) -> str:
    try:
        d = r.json().get("detail")
    except ValueError:
        d = r.text[:300]
    if isinstance(d, list):  # FastAPI validation errors
        d = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', [])[1:])}: {e.get('msg')}" for e in d if isinstance(e, dict))
    return " ".join(str(d).split())[:500]


def submit_and_wait(c: Client, *, model_spec: str, arch: str | None, suite: str, policy: str | None, baseline: str | None, project: str | None,
                    model_name: str | None, version: str | None, limit: int | None, seed: int, data: str | None, gpus: int,
                    no_wait: bool, quiet: bool, poll_s: float = 1.0) -> int:
    """Submit, stream progress to stderr, print the outcome; return the exit code (the gate's
    0/1/3; 2 when the job could not run or was cancelled; 4 when it crashed every attempt)."""
    import click

    proj = c.project(project)
    form: dict[str, str] = {"suite": suite, "seed": str(seed), "gpus": str(gpus)}
    for k, v in (("arch", arch), ("baseline", baseline), ("limit", limit), ("data", data)):
        if v is not None:
            form[k] = str(v)
    files: dict[str, Any] = {}
    opened = []
    if model_spec.startswith("zoo:"):
        form["spec"] = model_spec
        form["model_name"] = model_name or model_spec.split(":", 1)[1]
        form["version"] = version or "zoo"
    else:
        path = Path(model_spec)
        if not path.is_file():
            raise ServiceError(f"--model {model_spec[:100]!r} is neither a file nor zoo:NAME")
        if not arch:
            raise ServiceError("a weights file needs --arch (zoo-arch:NAME, torchvision:NAME or timm:NAME)")
        form["model_name"] = model_name or path.stem
        form["version"] = version or sha256_file(path)[:12]
        opened.append(open(path, "rb"))
        files["model"] = (path.name, opened[-1], "application/octet-stream")
    if policy:
        opened.append(open(policy, "rb"))
        files["policy"] = ("policy.yaml", opened[-1], "application/yaml")
    try:
        job = c.request("POST", f"/projects/{proj}/jobs", data=form, files=files or None)
    finally:
        for f in opened:
            f.close()
    click.echo(f"job {job['id']} ({proj}/{job['model']}/{job['version']}, suite {suite})")
    if no_wait:
        return 0
    last = ""
    while job["state"] in ("queued", "running"):
        time.sleep(poll_s)
        job = c.request("GET", f"/jobs/{job['id']}")
        line = f"{job['state']}: {job['message']}"
        if line != last and not quiet:
            click.echo(f"  {line}", err=True)
            last = line
    sc = job.get("scorecard") or {}
    click.echo(f"{job['state']}: {job['message']}; gate {sc.get('gate_outcome') or 'not gated'}; signature {sc.get('signature_state', 'none')}")
    click.echo(f"report: {c.server}/api/v1/jobs/{job['id']}/files/report")
    if job["state"] == "succeeded":
        return int(job["exit_code"] or 0)
    if job["state"] == "failed" and job.get("exit_code") == 2:
        return 2
    return 2 if job["state"] == "cancelled" else 4
