"""The dashboard's speed on a big history, and what open dashboards take from a worker.

    make bench-dashboard                              # 1,000,000 finished jobs, 100,000 queued
    make bench-dashboard DASHBOARD_ARGS="--quick"     # 20,000 and 2,000: a smoke run

On a fresh database it stores 1,000,000 finished jobs over the last day (13 tasks of 6 queues,
unevenly used; 5% failed with a traceback, 1% cancelled; arguments with a few words to search),
100,000 queued ones over the last hour (a tenth scheduled for later, a few running), an hour of
ten-second `pgqueue_stats` rows per queue and outcome, a few workers and schedules; then:

- a real `pgqueue dashboard` process (uvicorn, no login) is asked for every page over HTTP by
  one browser-like client (a kept-alive connection, the session cookie of its first visit):
  the overview, queues, workers, schedules, the jobs page with each filter and a next page, job
  pages of random finished and queued jobs, and the live part (`?fragment=live`) of each page
  that has one, in a shuffled order; the time to the last byte of each reply. The pages whose
  reads all open pages share (the overview, the queues) are never asked twice within that
  sharing's 2 s, so that each of their asks reads the database;
- a search for a word that only ten old jobs have in their arguments reads the whole history
  (no index helps a substring search): measured apart, as the known slow case;
- one worker drains no-op async jobs with and without ten open dashboards (ten clients each
  fetching the overview's live part every `--live-every` seconds, as dashboard.js does, and the
  dashboard's own depth sampler), in pairs whose order turns around each time: the ratio of
  each pair, and their median; and the CPU the dashboard process used meanwhile.

Targets (issue 16): every page and live update under 100 ms at the 95th percentile; ten open
dashboards cost a draining worker less than 5% of its throughput.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
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
from ops_cost import drain_bench_queue, free_port  # noqa: E402

from pgqueue.dashboard.app import SHARED_SECONDS  # noqa: E402
from pgqueue.inspect.jobs import list_jobs  # noqa: E402
from pgqueue.rollup import BOUNDS, BUCKET_SECONDS  # noqa: E402

TARGET_MS = 100.0
# The pages whose reads every open page shares for SHARED_SECONDS, by the read they share.
SHARED = {
    "overview": "overview",
    "overview live": "overview",
    "queues": "queues",
    "queues live": "queues",
}
# (task, queue, thousandths of the jobs): a few tasks make most of the jobs, as in real fleets.
TASKS = (
    ("webhooks.deliver", "webhooks", 200),
    ("emails.send_welcome", "emails", 180),
    ("emails.send_receipt", "emails", 150),
    ("media.thumbnail", "media", 150),
    ("billing.charge_card", "billing", 90),
    ("emails.send_digest", "emails", 60),
    ("billing.sync_invoices", "billing", 40),
    ("search.reindex", "default", 40),
    ("reports.export_csv", "reports", 35),
    ("media.transcode", "media", 30),
    ("billing.refund", "billing", 10),
    ("default.cleanup", "default", 10),
    ("reports.daily_sales", "reports", 5),
)
QUEUES = tuple(dict.fromkeys(queue for _, queue, _ in TASKS))
# The words of the arguments' notes (two per job): each is in about a tenth of the jobs.
WORDS = (
    *("invoice", "order", "refund", "upgrade", "renewal", "trial", "coupon", "shipment"),
    *("return", "exchange", "newsletter", "digest", "welcome", "reminder", "password"),
    *("avatar", "banner", "export", "import", "backup"),
)
COMMON_WORD = "invoice"
RARE_WORD = "chargeback"  # in ten finished jobs, spread over the whole history
ERROR_TYPES = ("ValueError", "TimeoutError", "ConnectionError", "KeyError", "PermissionError")
LIVE_WORKERS = 2
PAST_WORKERS = 6


def _lower_bounds() -> list[int]:
    bounds, total = [], 0
    for _, _, share in TASKS:
        bounds.append(total)
        total += share
    assert total == 1000
    return bounds


# A job's shape from its number i: its task (by the shares of TASKS), a status and two words,
# each drawn from its own hash of i (reproducible, unlike random()).
_JOB_SHAPE = """
    SELECT i, (%(tasks)s::text[])[k] AS task, (%(queues)s::text[])[k] AS queue,
           mod(abs(hashint8extended(i, 2)), 1000) AS roll,
           (%(words)s::text[])[1 + mod(abs(hashint8extended(i, 3)), %(nwords)s)]
               || ' ' || (%(words)s::text[])[1 + mod(abs(hashint8extended(i, 4)), %(nwords)s)]
               AS note
    FROM generate_series(%(first)s::bigint, %(last)s::bigint) AS i,
         LATERAL width_bucket(mod(abs(hashint8extended(i, 1)), 1000)::int,
                              %(lower)s::int[]) AS k
"""

FILL_FINISHED = f"""
INSERT INTO pgqueue_finished_jobs (
    id, queue, task_name, args, kwargs, status, priority, run_at, attempts, max_attempts,
    worker_id, result, error, created_at, started_at, finished_at, periodic_name,
    periodic_fire_at, history)
SELECT i, queue, task,
    jsonb_build_array(i, 'customer-' || mod(i, 5000)),
    jsonb_build_object('email', 'user' || mod(i, 20000) || '@example.com',
                       'note', note || CASE WHEN mod(i, %(rare_every)s::bigint) = 7
                                            THEN ' {RARE_WORD}' ELSE '' END),
    (CASE WHEN roll < 50 THEN 'failed' WHEN roll < 60 THEN 'cancelled'
          ELSE 'succeeded' END)::pgqueue_job_status,
    0, t - wait - took, CASE WHEN roll < 50 THEN 3 ELSE 1 END, 3, 1 + mod(i, {PAST_WORKERS}),
    CASE WHEN roll >= 60 THEN jsonb_build_object('ok', true, 'ms', mod(i, 900)) END,
    CASE WHEN roll < 50 THEN jsonb_build_object(
             'type', (%(errors)s::text[])[1 + mod(roll, 5)],
             'message', 'could not reach the service for customer-' || mod(i, 5000),
             'traceback', 'Traceback (most recent call last):' || chr(10)
                 || repeat('  File "/srv/app/' || split_part(task, '.', 1)
                           || '.py", line ' || (40 + mod(i, 300))
                           || ', in run' || chr(10) || '    result = client.call(payload)'
                           || chr(10), 12)
                 || (%(errors)s::text[])[1 + mod(roll, 5)] || ': could not reach the service')
         WHEN roll < 60 THEN jsonb_build_object(
             'type', 'Cancelled', 'message', 'cancelled by an operator') END,
    t - 2 * wait - took, t - took, t,
    CASE WHEN task = 'reports.daily_sales' THEN 'daily-sales' END,
    CASE WHEN task = 'reports.daily_sales' THEN date_trunc('hour', t) END,
    CASE WHEN roll < 50 THEN jsonb_build_array(
        jsonb_build_object('attempt', 1, 'worker_id', 1 + mod(i + 1, {PAST_WORKERS}),
                           'started_at', t - interval '3 minutes', 'ended_at',
                           t - interval '3 minutes' + took, 'outcome', 'retried',
                           'error', jsonb_build_object('type', 'TimeoutError',
                                                       'message', 'timed out')),
        jsonb_build_object('attempt', 2, 'worker_id', 1 + mod(i + 2, {PAST_WORKERS}),
                           'started_at', t - interval '1 minute', 'ended_at',
                           t - interval '1 minute' + took, 'outcome', 'retried',
                           'error', jsonb_build_object('type', 'TimeoutError',
                                                       'message', 'timed out'))) END
FROM ({_JOB_SHAPE}) AS shape,
    LATERAL (SELECT now() - (%(last)s - i) * (interval '1 day' / %(last)s) AS t,
                    mod(abs(hashint8extended(i, 5)), 500) * interval '1 ms' AS wait,
                    (5 + mod(abs(hashint8extended(i, 6)), 2000)) * interval '1 ms' AS took)
        AS times
"""

# Queued jobs enqueued over the last hour, a tenth of them due later; a few of the newest run
# on the live workers.
FILL_QUEUED = f"""
INSERT INTO pgqueue_jobs (
    id, queue, task_name, args, kwargs, status, run_at, attempts, worker_id, created_at,
    started_at)
SELECT i, queue, task,
    jsonb_build_array(i, 'customer-' || mod(i, 5000)),
    jsonb_build_object('email', 'user' || mod(i, 20000) || '@example.com', 'note', note),
    (CASE WHEN i > %(last)s - %(running)s THEN 'running' ELSE 'queued' END)::pgqueue_job_status,
    CASE WHEN roll < 100 THEN now() + interval '1 hour' ELSE t END,
    CASE WHEN i > %(last)s - %(running)s THEN 1 ELSE 0 END,
    CASE WHEN i > %(last)s - %(running)s THEN {PAST_WORKERS} + 1 + mod(i, {LIVE_WORKERS}) END,
    t,
    CASE WHEN i > %(last)s - %(running)s THEN now() - mod(i, 30) * interval '1 second' END
FROM ({_JOB_SHAPE}) AS shape,
    LATERAL (SELECT now() - (%(last)s - i) * (interval '1 hour' / (%(last)s - %(first)s + 1))
                 AS t) AS times
"""

# An hour of ten-second rows per queue and outcome, with histograms shaped like real ones, no
# two alike.
FILL_STATS = """
INSERT INTO pgqueue_stats (bucket, queue, outcome, count, wait_sum, wait_buckets,
    duration_sum, duration_buckets)
SELECT bucket, q, o, c, c * 0.05,
       ARRAY(SELECT round(c * w * (0.5 + mod(abs(hashtext(concat(b, q, o, 'w', k))), 100)
                                         / 100.0))::bigint
             FROM unnest(%(wait_shape)s::float8[]) WITH ORDINALITY AS x(w, k)),
       c * 0.3,
       ARRAY(SELECT round(c * w * (0.5 + mod(abs(hashtext(concat(b, q, o, 'd', k))), 100)
                                         / 100.0))::bigint
             FROM unnest(%(duration_shape)s::float8[]) WITH ORDINALITY AS x(w, k))
FROM generate_series(0, 359) AS b,
     LATERAL (SELECT to_timestamp(floor(extract(epoch FROM now()) / %(w)s) * %(w)s)
                  - b * %(w)s * interval '1 second' AS bucket) AS at,
     unnest(%(queues)s::text[]) AS q,
     unnest(ARRAY['succeeded', 'failed', 'retried', 'cancelled']) AS o,
     LATERAL (SELECT mod(abs(hashtext(concat(b, q, o))), 50)
                     + CASE o WHEN 'succeeded' THEN 200 WHEN 'failed' THEN 10
                              WHEN 'retried' THEN 5 ELSE 2 END AS c) AS n
"""

FILL_WORKERS = (
    f"""
INSERT INTO pgqueue_past_workers (id, name, hostname, pid, queues, concurrency, started_at,
    heartbeat_at, ended_at, ended_how, rescued)
SELECT n, 'worker-' || n, 'app-' || n, 1000 + n, %(queues)s::text[], 10,
       now() - interval '1 day', now() - n * interval '1 hour', now() - n * interval '1 hour',
       CASE WHEN n = 1 THEN 'lost' ELSE 'stopped' END, CASE WHEN n = 1 THEN 7 ELSE 0 END
FROM generate_series(1, {PAST_WORKERS}) AS n
""",
    f"""
INSERT INTO pgqueue_workers (id, name, hostname, pid, queues, concurrency, started_at,
    heartbeat_at)
SELECT n, 'worker-' || n, 'app-' || n, 1000 + n, %(queues)s::text[], 10,
       now() - interval '1 hour', now()
FROM generate_series({PAST_WORKERS} + 1, {PAST_WORKERS} + {LIVE_WORKERS}) AS n
""",
    "SELECT setval(pg_get_serial_sequence('pgqueue_workers', 'id'),"
    f" {PAST_WORKERS + LIVE_WORKERS})",
)

FILL_SCHEDULES = """
INSERT INTO pgqueue_periodic (name, task_name, cron, every_seconds, source, next_fire_at,
    last_fire_at, last_job_id)
VALUES
    ('daily-sales', 'reports.daily_sales', '0 * * * *', NULL, 'code',
     date_trunc('hour', now()) + interval '1 hour', date_trunc('hour', now()), %(last_id)s),
    ('digest', 'emails.send_digest', '0 7 * * 1-5', NULL, 'code',
     date_trunc('day', now()) + interval '1 day 7 hours', NULL, NULL),
    ('reindex', 'search.reindex', NULL, 300, 'cli', now() + interval '2 minutes', NULL, NULL),
    ('cleanup', 'default.cleanup', NULL, 3600, 'code', now() + interval '30 minutes', NULL,
     NULL),
    ('sync-invoices', 'billing.sync_invoices', '*/15 * * * *', NULL, 'cli',
     now() + interval '10 minutes', NULL, NULL)
"""


def _histogram_shape(peak: int) -> list[float]:
    """Shares of a histogram over BOUNDS (adding up to 1) centred on bucket `peak`."""
    weights = [0.5 ** abs(i - peak) for i in range(len(BOUNDS) + 1)]
    return [w / sum(weights) for w in weights]


def fill(dsn: str, finished: int, queued: int) -> dict[str, int]:
    """Store the history described in the module's docstring, then VACUUM (ANALYZE)."""
    shape = {
        "tasks": [t for t, _, _ in TASKS],
        "queues": [q for _, q, _ in TASKS],
        "lower": _lower_bounds(),
        "words": list(WORDS),
        "nwords": len(WORDS),
        "errors": list(ERROR_TYPES),
    }
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            FILL_FINISHED,
            {**shape, "first": 1, "last": finished, "rare_every": max(finished // 10, 1)},
        )
        conn.execute(
            FILL_QUEUED,
            {**shape, "first": finished + 1, "last": finished + queued, "running": 16},
        )
        # The hot table's identity must continue after the ids used here.
        conn.execute(
            "SELECT setval(pg_get_serial_sequence('pgqueue_jobs', 'id'), %s)",
            (finished + queued,),
        )
        conn.execute(
            FILL_STATS,
            {
                "w": BUCKET_SECONDS,
                "queues": list(QUEUES),
                "wait_shape": _histogram_shape(5),
                "duration_shape": _histogram_shape(8),
            },
        )
        for statement in FILL_WORKERS:
            conn.execute(statement, {"queues": list(QUEUES)})
        conn.execute(FILL_SCHEDULES, {"last_id": finished})
        for table in ("pgqueue_finished_jobs", "pgqueue_jobs", "pgqueue_stats"):
            conn.execute(f"VACUUM (ANALYZE) {table}")
        return {
            "finished": int(scalar(conn, "SELECT count(*) FROM pgqueue_finished_jobs")),
            "failed": int(
                scalar(conn, "SELECT count(*) FROM pgqueue_finished_jobs WHERE status = 'failed'")
            ),
            "queued": int(scalar(conn, "SELECT count(*) FROM pgqueue_jobs")),
            "stats_rows": int(scalar(conn, "SELECT count(*) FROM pgqueue_stats")),
            "finished_mb": int(
                scalar(conn, "SELECT pg_total_relation_size('pgqueue_finished_jobs') >> 20")
            ),
        }


# -- the dashboard and its browsers ----------------------------------------------------------


class Dashboard:
    """A `pgqueue dashboard` process on a free port of 127.0.0.1, ready when it answers."""

    def __init__(self, dsn: str, log: Path) -> None:
        self.port = free_port()
        self.log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pgqueue", "dashboard", "--port", str(self.port)],
            env={**os.environ, "PGQUEUE_DSN": dsn},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            probe = Browser(self.port)
            try:
                probe.get("/static/favicon.svg")
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"dashboard did not start:\n{log.read_text()}") from None
                time.sleep(0.05)  # polling for the port
            finally:
                probe.close()

    def cpu_seconds(self) -> float:
        """The CPU time (user and system) its process has used so far (Linux's /proc)."""
        fields = Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


class Browser:
    """What a browser does to the dashboard: one kept-alive connection (opened again when the
    server has closed an idle one), and the session cookie its first visit was given."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.cookie: str | None = None

    def get(self, path: str) -> bytes:
        """The reply's body; RuntimeError unless it is a 200."""
        try:
            status, body = self._get(path)
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            self.conn.close()  # the server closed an idle connection: a browser opens another
            status, body = self._get(path)
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}: {body[:300]!r}")
        return body

    def _get(self, path: str) -> tuple[int, bytes]:
        self.conn.request("GET", path, headers={"Cookie": self.cookie} if self.cookie else {})
        reply = self.conn.getresponse()
        body = reply.read()
        cookie = reply.getheader("set-cookie")
        if cookie:
            self.cookie = cookie.split(";")[0]
        return reply.status, body

    def close(self) -> None:
        self.conn.close()


# -- pages -----------------------------------------------------------------------------------


def jobs_url(**query: Any) -> str:
    return "/jobs?" + urllib.parse.urlencode(query) if query else "/jobs"


def pages(dsn: str, seed: int) -> dict[str, Callable[[], str]]:
    """Each page measured, by name: a function giving the path to ask for (a job page asks
    for a random job at each call)."""
    with psycopg.connect(dsn) as conn:
        first_page = list_jobs(conn, limit=50).next_before
        failed_page = list_jobs(conn, statuses=("failed",), limit=50).next_before
        finished = [
            int(r[0])
            for r in conn.execute(
                "SELECT id FROM pgqueue_finished_jobs TABLESAMPLE SYSTEM (5) LIMIT 2000"
            )
        ]
        failed = [
            int(r[0])
            for r in conn.execute(
                "SELECT id FROM pgqueue_finished_jobs WHERE status = 'failed' LIMIT 2000"
            )
        ]
        queued = [int(r[0]) for r in conn.execute("SELECT id FROM pgqueue_jobs LIMIT 2000")]
        deep = int(scalar(conn, "SELECT max(id) / 2 FROM pgqueue_finished_jobs"))
    draw = random.Random(seed)
    fixed = {
        "overview": "/",
        "overview live": "/?fragment=live",
        "queues": "/queues",
        "queues live": "/queues?fragment=live",
        "workers": "/workers",
        "workers live": "/workers?fragment=live",
        "schedules": "/schedules",
        "jobs": "/jobs",
        "jobs status=failed": jobs_url(status="failed"),
        "jobs status=queued": jobs_url(status="queued"),
        "jobs queue=emails": jobs_url(queue="emails"),
        "jobs queue=reports (small)": jobs_url(queue="reports"),
        "jobs task=billing.charge_card": jobs_url(task="billing.charge_card"),
        "jobs task=reports.daily_sales (rare)": jobs_url(task="reports.daily_sales"),
        "jobs task + status=failed": jobs_url(task="billing.charge_card", status="failed"),
        "jobs queue + status=failed": jobs_url(queue="reports", status="failed"),
        "jobs since=3600": jobs_url(since=3600),
        "jobs page 2 (before=)": jobs_url(before=first_page),
        "jobs status=failed page 2": jobs_url(status="failed", before=failed_page),
        "jobs before= (mid-history)": jobs_url(before=deep),
        f"jobs q={COMMON_WORD} (common)": jobs_url(q=COMMON_WORD),
    }
    table: dict[str, Callable[[], str]] = {
        name: (lambda path=path: path) for name, path in fixed.items()
    }
    table["job (finished)"] = lambda: f"/jobs/{draw.choice(finished)}"
    table["job (failed)"] = lambda: f"/jobs/{draw.choice(failed)}"
    table["job (queued)"] = lambda: f"/jobs/{draw.choice(queued)}"
    table["job live"] = lambda: f"/jobs/{draw.choice(finished + queued)}?fragment=live"
    return table


def time_pages(
    port: int,
    table: dict[str, Callable[[], str]],
    samples: int,
    seed: int,
) -> dict[str, list[float]]:
    """Ask for every page `samples` times in a shuffled order, after two unmeasured asks of
    each (the dashboard's first plans, templates and the session). The pages whose numbers
    open pages share (SHARED, for SHARED_SECONDS) are asked half as often, and never twice
    within SHARED_SECONDS: each of their asks is a read of the database, as for a person
    alone with the dashboard."""
    browser = Browser(port)
    for path in table.values():
        browser.get(path())
        browser.get(path())
    order = [name for name in table for _ in range(samples // 2 if SHARED.get(name) else samples)]
    random.Random(seed).shuffle(order)
    times: dict[str, list[float]] = {name: [] for name in table}
    last_read: dict[str, float] = {}
    while order:
        now = time.monotonic()
        ready = next(
            (
                i
                for i, name in enumerate(order)
                if now - last_read.get(SHARED.get(name, ""), -1e9) > SHARED_SECONDS
            ),
            None,
        )
        if ready is None:
            time.sleep(0.05)  # only shared pages are left, read too lately
            continue
        name = order.pop(ready)
        path = table[name]()
        started = time.perf_counter()
        browser.get(path)
        times[name].append(time.perf_counter() - started)
        if name in SHARED:
            last_read[SHARED[name]] = time.monotonic()
    browser.close()
    return times


def time_rare_search(port: int, samples: int) -> list[float]:
    browser = Browser(port)
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        browser.get(jobs_url(q=RARE_WORD))
        times.append(time.perf_counter() - started)
    browser.close()
    return times


def measure_pages(dsn: str, samples: int, logs: Path, results: Results) -> list[str]:
    """Every page's percentiles; the names of those over the target at p95."""
    dashboard = Dashboard(dsn, logs / "dashboard-pages.log")
    try:
        times = time_pages(dashboard.port, pages(dsn, seed=16), samples, seed=16)
        rare = time_rare_search(dashboard.port, max(samples // 10, 3))
    finally:
        dashboard.stop()
    slow = []
    for name, samples_of in times.items():
        figures = percentiles(samples_of)
        results.add(name, samples=len(samples_of), **figures)
        if figures["p95_ms"] > TARGET_MS:
            slow.append(name)
    # Apart from the others: no index serves a substring search, so a word that no recent job
    # has reads every job's arguments; the statement limit (5 s) bounds it.
    results.add(f"jobs q={RARE_WORD} (rare, known slow)", samples=len(rare), **percentiles(rare))
    return slow


# -- what open dashboards cost a worker ------------------------------------------------------


def watch_overview(
    browser: Browser, every: float, offset: float, stop: threading.Event, times: list[float]
) -> None:
    """An open overview: its live part fetched every `every` seconds (first after `offset`),
    each fetch's time added to `times`."""
    while not stop.wait(offset):
        offset = every
        started = time.perf_counter()
        browser.get("/?fragment=live")
        times.append(time.perf_counter() - started)
    browser.close()


@dataclass
class Drain:
    jobs_per_s: float
    live_times: list[float]  # each live fetch's time
    dashboard_cores: float  # the dashboard process's CPU seconds per second of the drain


def drain_once(dsn: str, n: int, viewers: int, every: float, logs: Path) -> Drain:
    """A worker drains n no-op async jobs of its own queue beside the big history, with
    `viewers` open overviews (none: no dashboard process either). The overviews are opened
    before the worker starts: what is measured is their keeping live, not their first load."""
    times: list[float] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM pgqueue_finished_jobs WHERE queue = 'bench'")
        conn.execute("VACUUM (ANALYZE) pgqueue_jobs")
        first = int(scalar(conn, "SELECT max(id) FROM pgqueue_all_jobs"))
        with psycopg.connect(dsn) as tx:
            enqueue_noops(tx, n, task="anoop")
        dashboard = Dashboard(dsn, logs / "dashboard-drain.log") if viewers else None
        stop = threading.Event()
        threads = []
        for k in range(viewers):
            assert dashboard is not None
            browser = Browser(dashboard.port)
            browser.get("/")
            threads.append(
                threading.Thread(
                    target=watch_overview,
                    args=(browser, every, every * (k + 1) / viewers, stop, times),
                    daemon=True,
                )
            )
        for thread in threads:
            thread.start()
        try:
            worker = Worker(dsn, logs / "dashboard-drain-worker.log")
            started, cpu = time.perf_counter(), dashboard.cpu_seconds() if dashboard else 0.0
            seconds = drain_bench_queue(conn, worker, n, first)
            if dashboard is not None:
                cpu = (dashboard.cpu_seconds() - cpu) / (time.perf_counter() - started)
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
            if dashboard is not None:
                dashboard.stop()
    return Drain(n / seconds, times, cpu)


def drain_with_dashboards(
    dsn: str, n: int, pairs: int, viewers: int, every: float, logs: Path, results: Results
) -> float:
    """Pairs of drains without and with open dashboards, the order turned around at each pair
    (AB, BA, ...) so that a drift of the machine's load does not favour one side; each pair's
    ratio (with / without) and their median, which is returned."""
    ratios, alone, watched, live, cores = [], [], [], [], []
    for pair in range(pairs):
        rates = {}
        for with_viewers in (False, True) if pair % 2 == 0 else (True, False):
            drain = drain_once(dsn, n, viewers if with_viewers else 0, every, logs)
            rates[with_viewers] = drain.jobs_per_s
            live += drain.live_times
            if with_viewers:
                cores.append(drain.dashboard_cores)
        alone.append(rates[False])
        watched.append(rates[True])
        ratios.append(rates[True] / rates[False])
        print(
            f"  pair {pair + 1}: {rates[False]:,.0f} jobs/s alone, {rates[True]:,.0f} with "
            f"{viewers} dashboards: {ratios[-1]:.3f}",
            flush=True,
        )
    results.add(
        f"drain with {viewers} dashboards",
        jobs=n,
        live_every_s=every,
        kept_median=statistics.median(ratios),
        kept_per_pair=ratios,
        alone_jobs_per_s=alone,
        watched_jobs_per_s=watched,
        # What the dashboard process itself used (its database sessions' work is not in it).
        dashboard_cores=cores,
    )
    if len(live) >= 2:
        results.add("overview live during drains", samples=len(live), **percentiles(live))
    return statistics.median(ratios)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small smoke run")
    parser.add_argument("--samples", type=int, help="asks per page (100; --quick 20)")
    parser.add_argument("--pairs", type=int, help="drain pairs (4; --quick 1)")
    parser.add_argument("--drain-jobs", type=int, help="jobs per drain (40,000; --quick 3,000)")
    parser.add_argument("--viewers", type=int, default=10, help="open dashboards (10)")
    parser.add_argument(
        "--live-every", type=float, default=5.0, help="seconds between live fetches (5)"
    )
    parser.add_argument("--skip-pages", action="store_true", help="only the drain pairs")
    parser.add_argument("--skip-drain", action="store_true", help="only the pages")
    parser.add_argument("--output", default=str(HERE / "results" / "dashboard-latest.json"))
    args = parser.parse_args()
    finished, queued = (20_000, 2_000) if args.quick else (1_000_000, 100_000)
    samples = args.samples or (20 if args.quick else 100)
    pairs = args.pairs or (1 if args.quick else 4)
    drain_jobs = args.drain_jobs or (3_000 if args.quick else 40_000)
    logs = HERE / "results" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    results = Results()
    slow: list[str] = []
    kept = None
    with fresh_database(server_dsn()) as dsn:
        with psycopg.connect(dsn) as conn:
            results.machine = {
                "cores": os.cpu_count(),
                "python": platform.python_version(),
                "postgres": scalar(conn, "SHOW server_version"),
                "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                "load_average": os.getloadavg(),
            }
        print("machine:", json.dumps(results.machine), flush=True)
        started = time.perf_counter()
        results.add("history", **fill(dsn, finished, queued), seconds=time.perf_counter() - started)
        if not args.skip_pages:
            slow = measure_pages(dsn, samples, logs, results)
        if not args.skip_drain:
            kept = drain_with_dashboards(
                dsn, drain_jobs, pairs, args.viewers, args.live_every, logs, results
            )
    if not args.skip_pages:
        print(f"over {TARGET_MS:.0f} ms at p95: {', '.join(slow) or 'none'}")
    if kept is not None:
        print(f"worker throughput kept with {args.viewers} dashboards: {kept:.3f} (target 0.95)")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(
        json.dumps({"machine": results.machine, **results.figures}, indent=2)
    )
    print(f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
