"""Benchmark: the service under load on loopback, bounded in count and time.

Starts ``robustlab serve --workers W`` on a fresh data folder, submits N evaluations of a small
suite on ``zoo:digits-cnn`` from S submitter threads while R reader threads poll job status and the
job list, waits for every job, then checks that every job ended exactly once (succeeded on its
first attempt, exactly one stored scorecard, exactly one MLflow run per job). Prints one JSON line:
task, impl, n, workers, seconds, jobs_per_minute, p50/p95 latency (ms) of submissions and of
reads, reads, and the exactly-once figures.

Examples:
    python bench/service_load.py --n 100 --workers 2
    python bench/service_load.py --n 12 --workers 2 --timeout 300
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

SUITES = Path(__file__).resolve().parents[1] / "tests" / "suites"


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def run(n: int, workers: int, submitters: int, readers: int, timeout: float, suite: str, limit: int, data_dir: Path) -> dict[str, Any]:
    import httpx

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    srv = subprocess.Popen([sys.executable, "-m", "robustlab", "serve", "--data-dir", str(data_dir), "--port", "0", "--workers", str(workers),
                            "--suite-dir", str(SUITES), "--device", "cpu"], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                           start_new_session=True)
    try:
        assert srv.stdout is not None
        first, second = srv.stdout.readline(), srv.stdout.readline()
        url = re.search(r"http://[0-9.]+:\d+", first).group(0)  # type: ignore[union-attr]
        admin = re.search(r"rl_[A-Za-z0-9_-]+", second).group(0)  # type: ignore[union-attr]
        for _ in range(300):
            try:
                if httpx.get(url + "/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        adm = httpx.Client(base_url=url + "/api/v1", headers={"Authorization": f"Bearer {admin}"}, timeout=60)
        adm.post("/projects", json={"name": "load"}).raise_for_status()
        sub = adm.post("/tokens", json={"name": "sub", "role": "submitter", "project": "load"}).json()["token"]
        aud = adm.post("/tokens", json={"name": "aud", "role": "auditor", "project": "load"}).json()["token"]
        sub_lat: list[float] = []
        read_lat: list[float] = []
        ids: list[str] = []
        errors: list[str] = []
        lock = threading.Lock()
        todo = list(range(n))
        done = threading.Event()

        def submitter() -> None:
            c = httpx.Client(base_url=url + "/api/v1", headers={"Authorization": f"Bearer {sub}"}, timeout=60)
            while True:
                with lock:
                    if not todo:
                        return
                    i = todo.pop()
                t = time.perf_counter()
                r = c.post("/projects/load/jobs", data={"model_name": "digits", "version": f"v{i}", "spec": "zoo:digits-cnn", "suite": suite,
                                                        "limit": str(limit), "seed": str(i)})
                with lock:
                    sub_lat.append(time.perf_counter() - t)
                    if r.status_code == 201:
                        ids.append(r.json()["id"])
                    else:
                        errors.append(f"submit {r.status_code}: {r.text[:200]}")

        def reader() -> None:
            c = httpx.Client(base_url=url + "/api/v1", headers={"Authorization": f"Bearer {aud}"}, timeout=60)
            k = 0
            while not done.is_set():
                with lock:
                    jid = ids[k % len(ids)] if ids else None
                k += 1
                t = time.perf_counter()
                r = c.get(f"/jobs/{jid}") if jid and k % 2 else c.get("/projects/load/jobs", params={"limit": 50})
                with lock:
                    read_lat.append(time.perf_counter() - t)
                    if r.status_code != 200:
                        errors.append(f"read {r.status_code}: {r.text[:200]}")
                time.sleep(0.05)

        t0 = time.perf_counter()
        threads = [threading.Thread(target=submitter) for _ in range(submitters)] + [threading.Thread(target=reader, daemon=True) for _ in range(readers)]
        for th in threads:
            th.start()
        for th in threads[:submitters]:
            th.join()
        c = httpx.Client(base_url=url + "/api/v1", headers={"Authorization": f"Bearer {aud}"}, timeout=60)
        deadline = time.time() + timeout
        jobs: list[dict[str, Any]] = []
        while time.time() < deadline:
            jobs = c.get("/projects/load/jobs", params={"limit": 500}).json()
            if len(jobs) >= len(ids) and all(j["state"] not in ("queued", "running") for j in jobs):
                break
            time.sleep(1)
        seconds = time.perf_counter() - t0
        done.set()
        db = sqlite3.connect(str(data_dir / "robustlab.db"))
        cards = dict(db.execute("SELECT job_id, COUNT(*) FROM scorecards GROUP BY job_id").fetchall())
        first, last = db.execute("SELECT MIN(started_at), MAX(finished_at) FROM jobs").fetchone()
        from datetime import datetime

        busy = (datetime.fromisoformat(str(last)) - datetime.fromisoformat(str(first))).total_seconds() if first and last else float("nan")
        mlflow_runs = 0
        try:
            ml = sqlite3.connect(str(data_dir / "mlflow.db"))
            mlflow_runs = int(ml.execute("SELECT COUNT(*) FROM runs").fetchone()[0])
        except sqlite3.Error:
            pass
        finished = [j for j in jobs if j["state"] == "succeeded"]
        return {
            "task": "service_load", "impl": "robustlab serve", "reference": None, "device": "cpu", "n": n, "workers": workers, "suite": suite,
            "limit": limit, "seconds": round(seconds, 1), "jobs_per_minute": round(60 * len(finished) / seconds, 2),
            # the same from the first job's start to the last one's end (without the workers' start-up)
            "busy_seconds": round(busy, 1), "jobs_per_minute_busy": round(60 * len(finished) / busy, 2) if busy > 0 else None,
            "load_avg_1min": round(os.getloadavg()[0], 1),
            "submit_ms_p50": round(1000 * pct(sub_lat, 0.5), 1), "submit_ms_p95": round(1000 * pct(sub_lat, 0.95), 1),
            "read_ms_p50": round(1000 * pct(read_lat, 0.5), 1), "read_ms_p95": round(1000 * pct(read_lat, 0.95), 1), "reads": len(read_lat),
            "submitted": len(ids), "succeeded": len(finished), "first_attempt": sum(1 for j in finished if j["attempts"] == 1),
            "with_one_scorecard": sum(1 for j in jobs if cards.get(j["id"]) == 1), "scorecards": sum(cards.values()), "mlflow_runs": mlflow_runs,
            "errors": errors[:5], "timed_out": len(finished) < len(ids) and time.time() >= deadline,
        }
    finally:
        os.killpg(srv.pid, signal.SIGTERM)
        srv.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--submitters", type=int, default=4)
    ap.add_argument("--readers", type=int, default=2)
    ap.add_argument("--suite", default="clean")
    ap.add_argument("--limit", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--data-dir", default=None)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="robustlab-load-") as tmp:
        out = run(a.n, a.workers, a.submitters, a.readers, a.timeout, a.suite, a.limit, Path(a.data_dir) if a.data_dir else Path(tmp) / "data")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
