"""Fleet-wide limits, measured: `make bench-limits` (LIMITS_ARGS="--runs 1" for one run).

With 4 worker processes serving one queue, a task limited to 50 jobs a second with a backlog
of its jobs ahead of an unlimited task's:

- no window of one second, wherever it starts, holds more than 50 starts of the limited task
  (the jobs' started_at, the database's clock);
- the unlimited task drains at 90% or more of the rate it drains at without the backlog (from
  its first job's start to its last one's finish).

Each run, on a fresh database, drains the unlimited task alone and beside the backlog in turn,
a few rounds (the machine's drifts in speed fall on both sides alike), and compares the
medians; it fails (exit status 1) if either target is missed. Uses $PGQUEUE_DSN's server,
else the embedded one.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
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


def plain_beside_backlog(
    conn: psycopg.Connection[Any], n: int, backlog: int
) -> tuple[float, list[datetime]]:
    """The unlimited task's drain rate behind a backlog of the limited task enqueued first,
    and the limited task's start times once its backlog has drained too."""
    limits_tasks.paced.delay_many([()] * backlog)
    limits_tasks.plain.delay_many([()] * n)
    wait_done(conn, limits_tasks.plain.name, n, timeout=600)
    rate = drain_rate(conn, limits_tasks.plain.name)
    wait_done(conn, limits_tasks.paced.name, backlog, timeout=backlog / 10 + 60)
    starts = [
        row[0]
        for row in conn.execute(
            "SELECT started_at FROM pgqueue_finished_jobs WHERE task_name = %s",
            (limits_tasks.paced.name,),
        )
    ]
    reset(conn)
    return rate, starts


def one_run(
    server: str, plain_jobs: int, paced_jobs: int, concurrency: int, rounds: int
) -> dict[str, Any]:
    with fresh_database(server) as dsn, tempfile.TemporaryDirectory() as logs:
        limits_tasks.app.set_dsn(dsn)
        workers = [
            WorkerProcess(dsn, Path(logs) / f"worker-{i}.log", concurrency) for i in range(WORKERS)
        ]
        alone: list[float] = []
        beside: list[float] = []
        most: list[int] = []
        spans: list[tuple[int, float]] = []
        try:
            for worker in workers:
                worker.wait_ready()
            with psycopg.connect(dsn, autocommit=True) as conn:
                plain_alone(conn, plain_jobs // 5)  # a warm-up: connections, prepared statements
                # Alone and beside the backlog in turn, so that the machine's drifts in speed
                # (other work on it) fall on both sides alike.
                for _ in range(rounds):
                    alone.append(plain_alone(conn, plain_jobs))
                    rate, starts = plain_beside_backlog(conn, plain_jobs, paced_jobs)
                    beside.append(rate)
                    most.append(most_in_one_second(starts))
                    spans.append((len(starts), (max(starts) - min(starts)).total_seconds()))
        finally:
            for worker in workers:
                worker.stop()
            limits_tasks.app.close()
    return {
        "alone": statistics.median(alone),
        "beside": statistics.median(beside),
        "share": statistics.median(beside) / statistics.median(alone),
        "most_in_1s": max(most),
        "spans": spans,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="runs (3)")
    parser.add_argument("--plain-jobs", type=int, default=5000, help="unlimited jobs (5,000)")
    parser.add_argument("--paced-jobs", type=int, default=600, help="limited backlog (600)")
    parser.add_argument("--concurrency", type=int, default=10, help="per worker (10)")
    parser.add_argument("--rounds", type=int, default=3, help="alone/beside rounds a run (3)")
    args = parser.parse_args()
    server = server_dsn()
    rate = limits_tasks.RATE
    failed = False
    for run in range(1, args.runs + 1):
        r = one_run(server, args.plain_jobs, args.paced_jobs, args.concurrency, args.rounds)
        ok = r["most_in_1s"] <= rate and r["share"] >= MIN_SHARE
        failed |= not ok
        spans = ", ".join(f"{n} in {seconds:.1f} s" for n, seconds in r["spans"])
        print(
            f"run {run}: limited {rate}/s: at most {r['most_in_1s']} starts in any 1 s window"
            f" (starts, first to last: {spans}); unlimited, median of {args.rounds}:"
            f" {r['alone']:,.0f}/s alone, {r['beside']:,.0f}/s beside the backlog"
            f" ({r['share']:.0%}) {'ok' if ok else 'MISSED'}",
            flush=True,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
