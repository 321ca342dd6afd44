"""Record a scorecard as an MLflow run, and read a scorecard back from one.

Tracking sees only a :class:`~robustlab.scorecard.Scorecard`. mlflow is imported only inside these
functions. Where the run goes, first match wins:

1. ``uri`` (``--mlflow-uri``);
2. ``$MLFLOW_TRACKING_URI``;
3. the embedded default: ``sqlite:///<out_dir>/mlflow.db`` with artifacts in ``<out_dir>/mlartifacts``
   (no server needed; browse with ``mlflow ui --backend-store-uri sqlite:///<out_dir>/mlflow.db``).

Telemetry is off (``MLFLOW_DISABLE_TELEMETRY=true``, ``DO_NOT_TRACK=true`` unless the user set them).

What is logged: params (model spec, data spec and size, suite, seed, and every check's parameters as
``check/<id>/<param>``), metrics (every finite scorecard metric under its scorecard key, as it is:
see :mod:`robustlab.tracking.keys`), tags (``robustlab.version``, ``robustlab.model_sha256``,
``robustlab.verdict``, ``robustlab.audit`` ...), artifacts (``scorecard.json``, ``per_sample.csv``
and the files passed in, e.g. ``report.html`` and the JUnit XML).
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..errors import RobustlabError
from ..scorecard import Scorecard, worst_verdict
from .keys import checked_metric_keys, name_key
from .store_lock import close_dead_runs, store_lock

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "robustlab"
_RUN_ID = re.compile(r"^(?:runs:/|mlflow:)?([0-9a-f]{32})/?$")
_MAX_PARAM_VALUE = 6000
_MAX_TAG_VALUE = 8000


def _quiet_env() -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # no "Creating initial MLflow database tables" lines
    # MLflow's defaults retry an unreachable server for minutes (7 retries, 120 s timeouts); a finished
    # run should learn within seconds that its tracking server is down
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")


#: seconds to wait for a TCP connection to an http(s) tracking server before giving up
CONNECT_TIMEOUT = 5.0


def check_reachable(tracking_uri: str, *, timeout: float = CONNECT_TIMEOUT) -> None:
    """Fail fast (one connection attempt, ``timeout`` seconds) when an http(s) tracking server
    cannot be reached, instead of MLflow's minutes of retries."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(tracking_uri)
    if parts.scheme not in ("http", "https"):
        return
    try:
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise RobustlabError(f"MLflow tracking URI {tracking_uri!r} is not a valid URL ({exc}); fix --mlflow-uri / MLFLOW_TRACKING_URI.") from exc
    if not host:
        raise RobustlabError(f"MLflow tracking URI {tracking_uri!r} names no host; fix --mlflow-uri / MLFLOW_TRACKING_URI.")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise RobustlabError(f"MLflow tracking server {host}:{port} is not reachable ({exc.strerror or exc}); start it, fix --mlflow-uri / MLFLOW_TRACKING_URI, or pass --no-mlflow.") from exc


def resolve_tracking_uri(out_dir: str | Path | None, uri: str | None = None) -> tuple[str, str | None]:
    """Return ``(tracking_uri, artifact_location or None)`` following the precedence above."""
    if uri:
        return uri, None
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env, None
    if out_dir is None:
        raise RobustlabError("no MLflow tracking URI: pass --mlflow-uri, set MLFLOW_TRACKING_URI, or give an output folder.")
    from urllib.parse import quote

    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    # built from the path, percent-encoded: '?', '#' or '%20' in a folder name stay part of the path
    return "sqlite:///" + quote(os.fsencode(out / "mlflow.db"), safe="/"), (out / "mlartifacts").as_uri()


def _client(tracking_uri: str) -> Any:
    _quiet_env()
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _experiment_id(client: Any, name: str, artifact_location: str | None) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    return str(client.create_experiment(name, artifact_location=artifact_location))


def _chunks(items: list[Any], n: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _params(card: Scorecard) -> dict[str, str]:
    p: dict[str, Any] = {
        "model": card.model.get("spec"),
        "model_format": card.model.get("format"),
        "data": card.data.get("spec"),
        "data_split": card.data.get("split"),
        "data_n": card.data.get("n"),
        "suite": card.suite.get("name"),
        "seed": card.run.get("seed"),
        "batch_size": card.run.get("batch_size"),
    }
    for c in card.checks:
        p[name_key("check", c.id, "check")] = c.check
        for k, v in c.params.items():
            p[name_key("check", c.id, k)] = v if isinstance(v, str) else json.dumps(v)
    out: dict[str, str] = {}
    for k, v in p.items():
        if v is None:
            continue
        out[k] = str(v)[:_MAX_PARAM_VALUE]
    return out


def _worst_audit(card: Scorecard) -> str:
    worst = worst_verdict(a.verdict for c in card.checks for a in c.audit)
    return "none" if worst is None else worst.value


def _tags(card: Scorecard, verdict: str, command: str) -> dict[str, str]:
    t = {
        "robustlab.version": str(card.tool.get("version", "")),
        "robustlab.model_sha256": str(card.model.get("sha256") or ""),
        "robustlab.model_spec": str(card.model.get("spec") or ""),
        "robustlab.data_spec": str(card.data.get("spec") or ""),
        "robustlab.suite": str(card.suite.get("name") or ""),
        "robustlab.verdict": verdict,
        "robustlab.audit": _worst_audit(card),
        "robustlab.schema_version": card.schema_version,
        "robustlab.command": command,
    }
    return {k: v[:_MAX_TAG_VALUE] for k, v in t.items()}


# A cell starting with one of these is read as a formula by Excel, LibreOffice Calc and Google Sheets
# (CWE-1236, "CSV injection"); the full-width forms too in some Excel locales. Sample ids come from
# user data (npz ``ids``, file names), so an auditor opening per_sample.csv would run them.
_FORMULA_LEAD = frozenset("=+-@\t\r\n\uff1d\uff0b\uff0d\uff20")


def csv_text_cell(value: Any) -> Any:
    """``value`` as a spreadsheet will show it but never evaluate it: a string starting with a formula
    character gets a leading ``'`` (the spreadsheets' "this is text" mark); numbers, booleans and
    other strings are unchanged."""
    if isinstance(value, str) and value and (value[0] in _FORMULA_LEAD or value.lstrip()[:1] in _FORMULA_LEAD):
        return "'" + value
    return value


def write_per_sample_csv(card: Scorecard, path: Path) -> Path | None:
    """One row per sample id, one column ``<check id>/<name>`` per per-sample list of that length.

    Text cells (ids, column names, string values) that a spreadsheet would read as a formula are
    written with a leading ``'`` (:func:`csv_text_cell`)."""
    ids = card.data.get("ids")
    cols: list[tuple[str, list[Any]]] = []
    for c in card.checks:
        for name, values in c.per_sample.items():
            cols.append((f"{c.id}/{name}", values))
    if not cols:
        return None
    n = len(ids) if isinstance(ids, list) else max(len(v) for _, v in cols)
    cols = [(k, v) for k, v in cols if len(v) == n]
    if not cols:
        return None
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id"] + [csv_text_cell(k) for k, _ in cols])
        for i in range(n):
            w.writerow([csv_text_cell(ids[i] if isinstance(ids, list) else i)] + [csv_text_cell(v[i]) for _, v in cols])
    return path


def log_scorecard(
    card: Scorecard,
    *,
    out_dir: str | Path | None,
    uri: str | None = None,
    experiment: str | None = None,
    artifacts: Iterable[str | Path] = (),
    verdict: str = "not-gated",
    command: str = "",
    scorecard_path: str | Path | None = None,
) -> str:
    """Log ``card`` as one finished MLflow run; return its run id.

    Args:
        card: the scorecard.
        out_dir: the run's output folder (hosts the embedded store when no URI is set).
        uri: tracking URI (overrides ``$MLFLOW_TRACKING_URI``).
        experiment: experiment name (default ``$MLFLOW_EXPERIMENT_NAME`` or ``robustlab``).
        artifacts: further files to attach (report, JUnit XML, ...); missing files are skipped.
        verdict: the gate outcome to record in the ``robustlab.verdict`` tag.
        command: the command line that produced the run.
        scorecard_path: the scorecard file to attach as-is (so a signature stays verifiable);
            otherwise the card is serialised.
    """
    tracking_uri, artifact_location = resolve_tracking_uri(out_dir, uri)
    _quiet_env()
    from mlflow.exceptions import MlflowException

    exp_name = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    check_reachable(tracking_uri)
    try:
        with store_lock(tracking_uri):
            run_id = _log_card(card, tracking_uri, exp_name, artifact_location, artifacts, verdict, command, scorecard_path)
    except (MlflowException, OSError) as exc:
        msg = exc.message if isinstance(exc, MlflowException) else str(exc)
        raise RobustlabError(f"MLflow logging to {tracking_uri} failed ({msg}); check --mlflow-uri / MLFLOW_TRACKING_URI or pass --no-mlflow.") from exc
    log.info("MLflow run %s logged to %s (experiment %r)", run_id, tracking_uri, exp_name)
    return run_id


def _log_card(card: Scorecard, tracking_uri: str, exp_name: str, artifact_location: str | None, artifacts: Iterable[str | Path], verdict: str, command: str,
              scorecard_path: str | Path | None) -> str:
    client = _client(tracking_uri)
    exp_id = _experiment_id(client, exp_name, artifact_location)
    close_dead_runs(client, exp_id, tracking_uri)  # a run killed while logging (then resumed) does not stay RUNNING
    run_name = f"{card.model.get('spec', 'model')} · {card.suite.get('name', 'suite')}"
    run = client.create_run(exp_id, run_name=run_name, tags=_tags(card, verdict, command))
    run_id = str(run.info.run_id)
    try:
        _fill_run(client, run_id, card, artifacts, scorecard_path)
    except BaseException:
        try:  # a half-logged run says so in MLflow, instead of staying RUNNING for ever
            client.set_terminated(run_id, "FAILED")
        except Exception:  # noqa: BLE001 - the first error is the one to report
            log.debug("MLflow: could not mark run %s FAILED", run_id, exc_info=True)
        raise
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _fill_run(client: Any, run_id: str, card: Scorecard, artifacts: Iterable[str | Path], scorecard_path: str | Path | None) -> None:
    """Log the metrics, parameters and artifacts of ``card`` into the open run ``run_id``."""
    from mlflow.entities import Metric, Param

    # the keys Scorecard.read gives for the logged scorecard.json (the identity for a card in the current schema)
    keyed = card.in_key_schema()
    metrics = {k: v for k, v in keyed.metrics().items() if v is not None and math.isfinite(v)}
    ts = int(time.time() * 1000)
    ms = [Metric(k, float(metrics[k]), ts, 0) for k in checked_metric_keys(metrics)]
    ps = [Param(k, v) for k, v in sorted(_params(card).items())]
    for chunk in _chunks(ms, 1000):
        client.log_batch(run_id, metrics=chunk)
    for pchunk in _chunks(ps, 100):
        client.log_batch(run_id, params=pchunk)
    with tempfile.TemporaryDirectory(prefix="robustlab-mlflow-") as tmp:
        t = Path(tmp)
        sc = t / "scorecard.json"
        src = Path(scorecard_path) if scorecard_path else None
        if src is not None and src.is_file():
            sc.write_bytes(src.read_bytes())  # byte-exact, so an embedded signature still verifies
        else:
            card.write(sc)
        client.log_artifact(run_id, str(sc))
        ps_csv = write_per_sample_csv(keyed, t / "per_sample.csv")
        if ps_csv is not None:
            client.log_artifact(run_id, str(ps_csv))
        for a in artifacts:
            ap = Path(a)
            if ap.is_file():
                client.log_artifact(run_id, str(ap))
            else:
                log.warning("MLflow: artifact %s does not exist; not logged", ap)


def is_run_reference(ref: str) -> bool:
    """True for ``runs:/<32 hex>``, ``mlflow:<32 hex>`` or a bare 32-hex MLflow run id."""
    return bool(_RUN_ID.match(ref.strip()))


def load_scorecard_from_run(ref: str, *, uri: str | None = None, out_dir: str | Path | None = None,
                            check_file: Callable[[Path], None] | None = None) -> Scorecard:
    """Download the ``scorecard.json`` artifact of an MLflow run and read it (``check_file`` is called
    with the downloaded file first, e.g. to verify its signature)."""
    m = _RUN_ID.match(ref.strip())
    if not m:
        raise RobustlabError(f"{ref!r} is neither a scorecard file nor an MLflow run id (32 hex digits, optionally 'runs:/ID').")
    run_id = m.group(1)
    tracking_uri, _ = resolve_tracking_uri(out_dir, uri)
    from mlflow.exceptions import MlflowException

    check_reachable(tracking_uri)
    try:
        client = _client(tracking_uri)  # inside: a file-path or unknown-scheme URI fails here
        with tempfile.TemporaryDirectory(prefix="robustlab-baseline-") as tmp:
            local = client.download_artifacts(run_id, "scorecard.json", tmp)
            if check_file is not None:
                check_file(Path(local))
            return Scorecard.read(local)
    except MlflowException as exc:
        raise RobustlabError(f"cannot read scorecard.json of MLflow run {run_id} from {tracking_uri} ({' '.join(str(exc.message).split())[:300]}); check the run id and --mlflow-uri.") from exc


def load_baseline(ref: str, *, uri: str | None = None, out_dir: str | Path | None = None,
                  check_file: Callable[[Path], None] | None = None) -> Scorecard:
    """A baseline scorecard from a file path or an MLflow run reference (``check_file`` is called with
    the scorecard file before it is read: the path given, or the run's downloaded ``scorecard.json``)."""
    p = Path(ref)
    if p.is_file():
        card = Scorecard.read(p)  # first: a file that is no scorecard is named as such
        if check_file is not None:
            check_file(p)
        return card
    if is_run_reference(ref):
        return load_scorecard_from_run(ref, uri=uri, out_dir=out_dir, check_file=check_file)
    raise RobustlabError(f"baseline {ref!r} is neither an existing scorecard file nor an MLflow run id; pass a scorecard.json path or a run id.")


def log_training(
    *,
    out_dir: str | Path,
    uri: str | None,
    name: str,
    params: dict[str, Any],
    history: list[dict[str, Any]],
    tags: dict[str, str],
    artifacts: Sequence[str | Path] = (),
    experiment: str | None = None,
) -> str:
    """Record a ``robustlab defend`` run: hyperparameters, per-epoch metrics (``step`` = epoch) and
    artifacts (the defended model, its training history, the before/after comparison)."""
    tracking_uri, artifact_location = resolve_tracking_uri(out_dir, uri)
    _quiet_env()
    from mlflow.entities import Metric, Param
    from mlflow.exceptions import MlflowException

    from .. import __version__

    exp_name = experiment or os.environ.get("MLFLOW_EXPERIMENT_NAME") or DEFAULT_EXPERIMENT
    try:
        check_reachable(tracking_uri)
        with store_lock(tracking_uri):
            client = _client(tracking_uri)
            exp_id = _experiment_id(client, exp_name, artifact_location)
            run = client.create_run(exp_id, run_name=name, tags={"robustlab.version": __version__, "robustlab.kind": "defend", **tags})
            run_id = str(run.info.run_id)

            ts = int(time.time() * 1000)
            ms = []
            for rec in history:
                step = int(rec.get("epoch", 0))
                for k, v in rec.items():
                    if k == "extra" and isinstance(v, dict):
                        ms += [Metric(name_key("train", kk), float(vv), ts, step) for kk, vv in v.items() if isinstance(vv, (int, float)) and math.isfinite(vv)]
                    elif isinstance(v, (int, float)) and not isinstance(v, bool) and k != "epoch" and math.isfinite(v):
                        ms.append(Metric(name_key("train", k), float(v), ts, step))
            for chunk in _chunks(ms, 1000):
                client.log_batch(run_id, metrics=chunk)
            ps = [Param(name_key(*k.split("/")), str(v)[:_MAX_PARAM_VALUE]) for k, v in sorted(params.items())]
            for pchunk in _chunks(ps, 100):
                client.log_batch(run_id, params=pchunk)
            for a in artifacts:
                ap = Path(a)
                if ap.is_file():
                    client.log_artifact(run_id, str(ap))
            client.set_terminated(run_id, "FINISHED")
    except (MlflowException, OSError) as exc:
        msg = exc.message if isinstance(exc, MlflowException) else str(exc)
        raise RobustlabError(f"MLflow logging to {tracking_uri} failed ({msg}); check --mlflow-uri / MLFLOW_TRACKING_URI or pass --no-mlflow.") from exc
    return run_id
