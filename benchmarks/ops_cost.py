"""What operations cost: every command and an exporter scrape on a big history, and what a
scraped exporter takes from a draining worker.

    make bench-ops                          # 1,000,000 finished jobs, 100,000 queued
    make bench-ops OPS_ARGS="--quick"       # 100,000 and 10,000: a smoke run

On a fresh database it stores 1,000,000 finished jobs (the last day's, 3% failed or cancelled,
20 tasks, 5 queues) and 100,000 queued ones (a tenth of them scheduled for later), a day of
outcome counts in pgqueue_stats, and a few workers; then:

- each command (`pgqueue status`, `jobs list` with each filter, `jobs show`, `queues`,
  `workers`, `doctor`) is answered 20 times in this process (`pgqueue.cli.main`, output
  discarded): connection, schema check, queries and formatting, but not the interpreter's
  start (the same for every command: reported once, apart, as `pgqueue status` run 5 times
  as a whole process);
- the exporter's /metrics is fetched 20 times, each a fresh read of the database;
- a worker drains 20,000 no-op jobs with and without an exporter scraped every second,
  alternating, five pairs: the ratio of the medians is what the scrapes cost it.

Targets (issue 13): every command and a scrape under 200 ms at the 95th percentile; the worker
keeps at least 95% of its throughput.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psycopg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from bench import (  # noqa: E402
    Results,
    Worker,
    enqueue_noops,
    fresh_database,
    percentiles,
    scalar,
    server_dsn,
)

from pgqueue.cli import main as cli_main  # noqa: E402
from pgqueue.rollup import BOUNDS, BUCKET_SECONDS  # noqa: E402

QUEUES = ("default", "emails", "reports", "billing", "media")
TASKS = 20


def fill(dsn: str, finished: int, queued: int) -> dict[str, int]:
    """Store the history: finished jobs over the last day, queued jobs, a day of stats."""
    buckets = 25 * 3600 // BUCKET_SECONDS
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            """
            INSERT INTO pgqueue_finished_jobs (
                id, queue, task_name, args, kwargs, status, priority, run_at, attempts,
                max_attempts, worker_id, result, error, created_at, started_at, finished_at)
            SELECT i, (%(queues)s::text[])[1 + i %% 5], 'tasks.task_' || (i %% %(tasks)s),
                jsonb_build_array(i, 'order-' || i), '{}'::jsonb,
                (CASE WHEN i %% 100 < 97 THEN 'succeeded'
                      WHEN i %% 100 < 99 THEN 'failed' ELSE 'cancelled' END)::pgqueue_job_status,
                0, t - interval '50 ms', 1, 3, 1,
                CASE WHEN i %% 100 < 97 THEN to_jsonb(i) END,
                CASE WHEN i %% 100 >= 97 THEN jsonb_build_object(
                    'type', 'ValueError', 'message', 'bad order ' || i,
                    'traceback', repeat('Traceback line\n', 20)) END,
                t - interval '60 ms', t - interval '40 ms', t
            FROM generate_series(1, %(n)s) AS i,
                LATERAL (SELECT now() - (%(n)s - i) * (interval '1 day' / %(n)s) AS t) AS s
            """,
            {"queues": list(QUEUES), "tasks": TASKS, "n": finished},
        )
        # The hot table's identity must continue after the finished ids.
        conn.execute("SELECT setval(pg_get_serial_sequence('pgqueue_jobs', 'id'), %s)", (finished,))
        conn.execute(
            """
            INSERT INTO pgqueue_jobs (queue, task_name, args, run_at)
            SELECT (%(queues)s::text[])[1 + i %% 5], 'tasks.task_' || (i %% %(tasks)s),
                jsonb_build_array(i),
                CASE WHEN i %% 10 = 0 THEN now() + interval '1 hour'
                     ELSE now() - interval '1 minute' END
            FROM generate_series(1, %(n)s) AS i
            """,
            {"queues": list(QUEUES), "tasks": TASKS, "n": queued},
        )
        histogram = [0] * (len(BOUNDS) + 1)
        histogram[5] = 7
        histogram[8] = 3
        conn.execute(
            """
            INSERT INTO pgqueue_stats (bucket, queue, outcome, count, wait_sum, wait_buckets,
                duration_sum, duration_buckets)
            SELECT to_timestamp(floor(extract(epoch FROM now()) / %(w)s) * %(w)s)
                       - b * %(w)s * interval '1 second',
                   q, o, 10, 1.0, %(h)s, 1.0, %(h)s
            FROM generate_series(0, %(buckets)s - 1) AS b, unnest(%(queues)s::text[]) AS q,
                 unnest(ARRAY['succeeded', 'failed', 'retried', 'cancelled']) AS o
            """,
            {"w": BUCKET_SECONDS, "h": histogram, "buckets": buckets, "queues": list(QUEUES)},
        )
        conn.execute("VACUUM (ANALYZE) pgqueue_finished_jobs")
        conn.execute("VACUUM (ANALYZE) pgqueue_jobs")
        conn.execute("VACUUM (ANALYZE) pgqueue_stats")
        return {
            "finished": int(scalar(conn, "SELECT count(*) FROM pgqueue_finished_jobs")),
            "queued": int(scalar(conn, "SELECT count(*) FROM pgqueue_jobs")),
            "stats_rows": int(scalar(conn, "SELECT count(*) FROM pgqueue_stats")),
        }


def commands(dsn: str) -> dict[str, list[str]]:
    with psycopg.connect(dsn) as conn:
        failed_id = scalar(
            conn, "SELECT max(id) FROM pgqueue_finished_jobs WHERE status = 'failed'"
        )
        queued_id = scalar(conn, "SELECT max(id) FROM pgqueue_jobs")
        mid = int(scalar(conn, "SELECT max(id) / 2 FROM pgqueue_finished_jobs"))
    return {
        "status": ["status"],
        "jobs list": ["jobs", "list"],
        "jobs list --status failed": ["jobs", "list", "--status", "failed"],
        "jobs list --queue": ["jobs", "list", "--queue", "reports"],
        "jobs list --task": ["jobs", "list", "--task", "tasks.task_7"],
        "jobs list --task --status failed": [
            "jobs",
            "list",
            "--task",
            "tasks.task_7",
            "--status",
            "failed",
        ],
        "jobs list --status queued": ["jobs", "list", "--status", "queued"],
        "jobs list --since 1h": ["jobs", "list", "--since", "1h"],
        "jobs list --before (page deep)": ["jobs", "list", "--before", str(mid)],
        "jobs show (failed)": ["jobs", "show", str(failed_id)],
        "jobs show (queued)": ["jobs", "show", str(queued_id)],
        "queues": ["queues"],
        "workers": ["workers"],
        "doctor": ["doctor"],
    }


def time_command(dsn: str, argv: list[str], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        out = io.StringIO()
        started = time.perf_counter()
        with contextlib.redirect_stdout(out):
            code = cli_main([*argv, "--dsn", dsn])
        samples.append(time.perf_counter() - started)
        if code not in (0, 1):  # doctor exits 1 on a FAIL finding, which is an answer
            raise RuntimeError(f"pgqueue {' '.join(argv)} exited {code}:\n{out.getvalue()}")
    return samples


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Exporter:
    def __init__(self, dsn: str, log: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        self.log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pgqueue", "exporter", "--port", str(self.port), *args],
            env={**os.environ, "PGQUEUE_DSN": dsn},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.scrape()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"exporter did not start:\n{log.read_text()}") from None
                time.sleep(0.05)  # polling for the port

    def scrape(self) -> bytes:
        with urllib.request.urlopen(self.url, timeout=10) as reply:
            return bytes(reply.read())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


def scrape_cost(dsn: str, repeat: int, logs: Path, results: Results) -> None:
    # A minimum interval of 0: every scrape reads the database, the cost being measured.
    exporter = Exporter(dsn, logs / "ops-exporter.log", "--min-interval", "0")
    try:
        samples = []
        for _ in range(repeat):
            started = time.perf_counter()
            body = exporter.scrape()
            samples.append(time.perf_counter() - started)
        if b"pgqueue_queue_jobs" not in body:
            raise RuntimeError("the exporter's reply has no pgqueue_queue_jobs")
    finally:
        exporter.stop()
    results.add("exporter scrape", **percentiles(samples))


def drain_bench_queue(conn: psycopg.Connection[Any], worker: Worker, n: int, first: int) -> float:
    """Wait until the worker has emptied queue "bench" (n jobs), stop it, and return the
    seconds from its first job's start to its last one's finish (the database's clock). Its
    jobs have ids above `first`."""
    deadline = time.monotonic() + 600
    try:
        # Through the primary key of the finished table: cheap beside the 100,000 queued jobs
        # (the drain's time is the database's, so the poll's pace does not enter it).
        while (
            scalar(conn, "SELECT count(*) FROM pgqueue_finished_jobs WHERE id > %s", (first,)) < n
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the drain did not finish in time")
            time.sleep(0.5)  # polling progress
    finally:
        worker.stop()
    done, seconds = conn.execute(
        "SELECT count(*), extract(epoch FROM max(finished_at) - min(started_at))"
        " FROM pgqueue_finished_jobs WHERE queue = 'bench'"
    ).fetchone() or (0, 0)
    if done != n:
        raise RuntimeError(f"{done} of {n} jobs finished")
    return float(seconds)


def scrape_every_second(exporter: Exporter | None, stop: threading.Event) -> None:
    while exporter is not None and not stop.wait(1.0):
        exporter.scrape()


def drain_with_scrapes(dsn: str, n: int, pairs: int, logs: Path, results: Results) -> None:
    """A worker drains n no-op jobs of its own queue (its defaults) beside the big history,
    with and without an exporter (its defaults) scraped every second, alternating; the
    ratio of the medians."""
    alone: list[float] = []
    scraped: list[float] = []
    for round_ in range(pairs):
        for with_exporter in (False, True) if round_ % 2 == 0 else (True, False):
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("DELETE FROM pgqueue_finished_jobs WHERE queue = 'bench'")
                conn.execute("VACUUM (ANALYZE) pgqueue_jobs")
                first = int(scalar(conn, "SELECT max(id) FROM pgqueue_all_jobs"))
                with psycopg.connect(dsn) as tx:
                    enqueue_noops(tx, n)
                exporter = Exporter(dsn, logs / "ops-drain-exporter.log") if with_exporter else None
                stop = threading.Event()

                scraper = threading.Thread(
                    target=scrape_every_second, args=(exporter, stop), daemon=True
                )
                scraper.start()
                try:
                    worker = Worker(dsn, logs / "ops-drain-worker.log")
                    seconds = drain_bench_queue(conn, worker, n, first)
                finally:
                    stop.set()
                    scraper.join(10)
                    if exporter:
                        exporter.stop()
            (scraped if with_exporter else alone).append(n / seconds)
    results.add(
        "drain with exporter",
        jobs=n,
        alone_jobs_per_s=statistics.median(alone),
        scraped_jobs_per_s=statistics.median(scraped),
        kept=statistics.median(scraped) / statistics.median(alone),
        alone_runs=alone,
        scraped_runs=scraped,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--repeat", type=int, default=20, help="answers per command (20)")
    parser.add_argument("--output", default=str(HERE / "results" / "ops-latest.json"))
    args = parser.parse_args()
    finished, queued, drain_jobs = (
        (100_000, 10_000, 2_000) if args.quick else (1_000_000, 100_000, 20_000)
    )
    logs = HERE / "results" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    server = server_dsn()
    results = Results()
    with fresh_database(server) as dsn:
        with psycopg.connect(dsn) as conn:
            results.machine = {
                "cores": os.cpu_count(),
                "python": platform.python_version(),
                "postgres": scalar(conn, "SHOW server_version"),
                "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            }
        print("machine:", json.dumps(results.machine), flush=True)
        started = time.perf_counter()
        sizes = fill(dsn, finished, queued)
        results.add("history", **sizes, fill_seconds=time.perf_counter() - started)
        for name, argv in commands(dsn).items():
            time_command(dsn, argv, 2)  # warm: imports, and the first plan of each query
            results.add(name, **percentiles(time_command(dsn, argv, args.repeat)))
        whole = []
        for _ in range(5):
            started = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "pgqueue", "status", "--dsn", dsn],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            whole.append(time.perf_counter() - started)
        results.add("status, whole process", **percentiles(whole))
        scrape_cost(dsn, args.repeat, logs, results)
        drain_with_scrapes(dsn, drain_jobs, 1 if args.quick else 5, logs, results)
    worst = max(
        v["p95_ms"]
        for k, v in results.figures.items()
        if isinstance(v, dict) and "p95_ms" in v and "whole process" not in k
    )
    print(f"slowest p95: {worst:.1f} ms (target < 200 ms)")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(
        json.dumps({"machine": results.machine, **results.figures}, indent=2)
    )
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
