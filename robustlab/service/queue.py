"""The distributed queue: Celery with a Redis broker carries "run job X" to workers on other
machines. The database stays the record of every job (state, attempts, heartbeat); the broker is
only the transport, so a lost or duplicated message never loses or doubles a job: a worker runs
a job only after the conditional claim in :meth:`Worker.claim` succeeds, and the server's
:class:`Requeuer` re-publishes queued jobs and retries those whose worker went silent.

Why Celery + Redis: both are standard, packaged everywhere (``pip install celery[redis]``,
``apt install redis-server``), and Celery's ``acks_late`` / ``reject_on_worker_lost`` /
``prefetch_multiplier = 1`` give exactly-one-job-at-a-time workers that hand a message back when
they die; the job itself still runs in its own process (``torchrun`` for several GPUs).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from ..errors import RobustlabError
from .settings import Settings

log = logging.getLogger(__name__)
TASK = "robustlab.run_job"
QUEUE = "robustlab"


class QueueUnavailable(RobustlabError):
    """The broker cannot be reached (the API answers 503 with this message)."""


def celery_app(broker_url: str) -> Any:
    from celery import Celery

    app = Celery("robustlab", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1, task_default_queue=QUEUE,
        task_serializer="json", accept_content=["json"], broker_connection_retry_on_startup=True, broker_connection_timeout=3,
        broker_transport_options={"visibility_timeout": 3600, "socket_connect_timeout": 3, "socket_timeout": 5},
        worker_hijack_root_logger=False, worker_send_task_events=False, task_ignore_result=True,
    )
    return app


_apps: dict[str, Any] = {}
_lock = threading.Lock()


def publish(broker_url: str, job_id: str) -> None:
    """Send "run ``job_id``" to the queue; :class:`QueueUnavailable` when the broker is down."""
    with _lock:
        app = _apps.get(broker_url) or _apps.setdefault(broker_url, celery_app(broker_url))
    try:
        app.send_task(TASK, args=[job_id], queue=QUEUE, retry=False)
    except Exception as exc:  # noqa: BLE001 - kombu/redis raise many types for "cannot connect"
        raise QueueUnavailable(f"the job queue at {_safe(broker_url)} is unavailable ({type(exc).__name__}); nothing was queued, retry shortly") from exc


def _safe(url: str) -> str:
    """The broker URL without a password."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def run_worker(settings: Settings, *, device: str = "auto", name: str | None = None) -> None:
    """A Celery worker that runs one job at a time (``robustlab worker --queue URL``)."""
    from .worker import Worker

    assert settings.queue_url
    app = celery_app(settings.queue_url)
    worker = Worker(settings, device=device, name=name)
    worker.prepare()  # the MLflow experiment and the warm launcher, before the first job

    @app.task(name=TASK, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
    def run_job(job_id: str) -> str:
        for _ in range(20):  # the message can overtake the submitting transaction's commit
            got = worker.claim(job_id)
            if got is not None:
                worker.execute(got)
                return "ran"
            if worker.exists(job_id):
                return "skipped"  # running elsewhere, finished or cancelled: a duplicate message
            time.sleep(0.25)
        return "unknown job"

    app.worker_main(["worker", "-Q", QUEUE, "--pool", "solo", "--concurrency", "1", "--loglevel", "WARNING", "-n", f"robustlab@{worker.name}"])


class Requeuer(threading.Thread):
    """In the server: every ``every_s``, retry jobs whose worker went silent and (re)publish queued
    jobs not published for ``republish_s`` (a broker restart may have lost their message)."""

    def __init__(self, settings: Settings, *, every_s: float = 5.0, republish_s: float = 60.0) -> None:
        super().__init__(daemon=True, name="robustlab-requeuer")
        self.settings, self.every_s, self.republish_s = settings, every_s, republish_s
        self.published: dict[str, float] = {}
        self.stopped = threading.Event()

    def tick(self) -> None:
        from sqlalchemy import select

        from .models import Job, JobState
        from .worker import Worker

        w = Worker(self.settings)
        w.reap()
        assert self.settings.queue_url
        with w.db.session() as s:
            queued = list(s.scalars(select(Job.id).where(Job.state == JobState.QUEUED).order_by(Job.created_at)))
        now = time.monotonic()
        for job_id in queued:
            if now - self.published.get(job_id, -1e9) >= self.republish_s:
                publish(self.settings.queue_url, job_id)
                self.published[job_id] = now
        for job_id in set(self.published) - set(queued):
            del self.published[job_id]

    def run(self) -> None:
        while not self.stopped.wait(self.every_s):
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 - a down database or broker: try again next tick
                log.warning("requeue pass failed: %s", " ".join(str(exc).split())[:200])
