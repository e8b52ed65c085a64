"""Fleet-wide limits, measured: `make bench-limits` (LIMITS_ARGS="--runs 1" for one run).

With 4 worker processes serving one queue, a task limited to 50 jobs a second with a backlog
of its jobs ahead of an unlimited task's:

- no window of one second, wherever it starts, holds more than 50 starts of the limited task
  (the jobs' started_at, the database's clock);
- the unlimited task drains at 90% or more of the rate it drains at without the backlog (from
  its first job's start to its last one's finish; without the backlog: the mean of a drain
  before and one after).

Each run measures both, on a fresh database; the run fails (exit status 1) if either target is
missed. Uses $PGQUEUE_DSN's server, else the embedded one.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import limits_tasks  # noqa: E402
from bench import fresh_database, reset, scalar, server_dsn  # noqa: E402

WORKERS = 4
MIN_SHARE = 0.90  # of the unlimited task's rate without the backlog


class WorkerProcess:
    """One `pgqueue worker` serving the benchmark's queue."""

    def __init__(self, dsn: str, log: Path, concurrency: int) -> None:
        self.log_path = log
        self.log = log.open("wb")
        env = {**os.environ, "PGQUEUE_DSN": dsn, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pgqueue",
                "worker",
                "--app",
                "limits_tasks:app",
                "--no-scheduler",
                "--concurrency",
                str(concurrency),
            ],
            cwd=HERE,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while b" ready: " not in self.log_path.read_bytes():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker did not start:\n{self.log_path.read_text()}")
            time.sleep(0.05)  # polling the log for readiness

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
        self.log.close()


def wait_done(conn: psycopg.Connection[Any], task: str, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (
        scalar(conn, "SELECT count(*) FROM pgqueue_finished_jobs WHERE task_name = %s", (task,)) < n
    ):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{task}: {n} jobs did not finish within {timeout:.0f}s")
        time.sleep(0.05)  # polling progress


def drain_rate(conn: psycopg.Connection[Any], task: str) -> float:
    """Jobs a second of `task`, from its first job's start to its last one's finish."""
    n, seconds = conn.execute(
        "SELECT count(*), extract(epoch FROM max(finished_at) - min(started_at))::float8"
        " FROM pgqueue_finished_jobs WHERE task_name = %s",
        (task,),
    ).fetchone() or (0, 0.0)
    return float(n) / float(seconds)


def most_in_one_second(starts: list[datetime]) -> int:
    """The most starts in any half-open window [t, t + 1 s)."""
    starts = sorted(starts)
    most = first = 0
    for last, start in enumerate(starts):
        while starts[first] <= start - timedelta(seconds=1):
            first += 1
        most = max(most, last - first + 1)
    return most


def plain_alone(conn: psycopg.Connection[Any], n: int) -> float:
    """The unlimited task's drain rate with nothing else queued."""
    limits_tasks.plain.delay_many([()] * n)
    wait_done(conn, limits_tasks.plain.name, n, timeout=600)
    rate = drain_rate(conn, limits_tasks.plain.name)
    reset(conn)
    return rate


def one_run(server: str, plain_jobs: int, paced_jobs: int, concurrency: int) -> dict[str, float]:
    paced_name, plain_name = limits_tasks.paced.name, limits_tasks.plain.name
    with fresh_database(server) as dsn, tempfile.TemporaryDirectory() as logs:
        limits_tasks.app.set_dsn(dsn)
        workers = [
            WorkerProcess(dsn, Path(logs) / f"worker-{i}.log", concurrency) for i in range(WORKERS)
        ]
        try:
            for worker in workers:
                worker.wait_ready()
            with psycopg.connect(dsn, autocommit=True) as conn:
                # A warm-up (connections, prepared statements), then the unlimited task alone.
                limits_tasks.plain.delay_many([()] * (plain_jobs // 5))
                wait_done(conn, plain_name, plain_jobs // 5, timeout=600)
                reset(conn)
                alone_before = plain_alone(conn, plain_jobs)
                # The same behind a backlog of the limited task, enqueued first.
                limits_tasks.paced.delay_many([()] * paced_jobs)
                limits_tasks.plain.delay_many([()] * plain_jobs)
                wait_done(conn, plain_name, plain_jobs, timeout=600)
                beside = drain_rate(conn, plain_name)
                wait_done(conn, paced_name, paced_jobs, timeout=paced_jobs / 10 + 60)
                starts = [
                    row[0]
                    for row in conn.execute(
                        "SELECT started_at FROM pgqueue_finished_jobs WHERE task_name = %s",
                        (paced_name,),
                    )
                ]
                # Its mean rate: the starts after the first, over the time from first to last.
                span = (max(starts) - min(starts)).total_seconds()
                paced_rate = (len(starts) - 1) / span
                reset(conn)
                # Alone again: the baseline is the mean of before and after, so that a drift
                # of the machine's speed during the run does not favour either side.
                alone = (alone_before + plain_alone(conn, plain_jobs)) / 2
        finally:
            for worker in workers:
                worker.stop()
            limits_tasks.app.close()
    return {
        "plain_alone_per_s": alone,
        "plain_beside_backlog_per_s": beside,
        "share": beside / alone,
        "paced_most_in_1s": float(most_in_one_second(starts)),
        "paced_per_s": paced_rate,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs (3)")
    parser.add_argument("--plain-jobs", type=int, default=5000, help="unlimited jobs (5,000)")
    parser.add_argument("--paced-jobs", type=int, default=600, help="limited backlog (600)")
    parser.add_argument("--concurrency", type=int, default=10, help="per worker (10)")
    args = parser.parse_args()
    server = server_dsn()
    rate = limits_tasks.RATE
    failed = False
    for run in range(1, args.runs + 1):
        r = one_run(server, args.plain_jobs, args.paced_jobs, args.concurrency)
        ok = r["paced_most_in_1s"] <= rate and r["share"] >= MIN_SHARE
        failed |= not ok
        print(
            f"run {run}: limited {rate}/s: at most {r['paced_most_in_1s']:.0f} starts in any"
            f" 1 s window, {r['paced_per_s']:.1f}/s on average; unlimited: "
            f"{r['plain_alone_per_s']:,.0f}/s alone, {r['plain_beside_backlog_per_s']:,.0f}/s"
            f" beside the backlog ({r['share']:.0%}) {'ok' if ok else 'MISSED'}",
            flush=True,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
