"""Prometheus text exposition (format 0.0.4) computed from the database, so every server process
and worker reports the same numbers: queue depth, jobs by state, retries, job durations."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .models import Job, JobState


def prometheus_text(s: Session) -> str:
    counts = dict(s.execute(select(Job.state, func.count()).group_by(Job.state)).all())
    lines = ["# HELP robustlab_queue_depth Jobs waiting for a worker.", "# TYPE robustlab_queue_depth gauge",
             f"robustlab_queue_depth {counts.get(JobState.QUEUED, 0)}",
             "# HELP robustlab_jobs Jobs by state.", "# TYPE robustlab_jobs gauge"]
    lines += [f'robustlab_jobs{{state="{st.value}"}} {counts.get(st, 0)}' for st in JobState]
    retried = s.scalar(select(func.count()).select_from(Job).where(Job.attempts > 1)) or 0
    lines += ["# HELP robustlab_jobs_retried Jobs started more than once (a worker crashed or was lost).",
              "# TYPE robustlab_jobs_retried gauge", f"robustlab_jobs_retried {retried}"]
    rows = s.execute(select(Job.started_at, Job.finished_at).where(Job.state == JobState.SUCCEEDED, Job.started_at.is_not(None), Job.finished_at.is_not(None))).all()
    durs = sorted(max(0.0, (f - st).total_seconds()) for st, f in rows if st is not None and f is not None)
    lines += ["# HELP robustlab_job_duration_seconds Wall time of finished jobs (last attempt).", "# TYPE robustlab_job_duration_seconds summary"]
    for q in (0.5, 0.95):
        v = durs[min(len(durs) - 1, int(q * len(durs)))] if durs else float("nan")
        lines.append(f'robustlab_job_duration_seconds{{quantile="{q}"}} {v}')
    lines += [f"robustlab_job_duration_seconds_sum {sum(durs)}", f"robustlab_job_duration_seconds_count {len(durs)}"]
    return "\n".join(lines) + "\n"
