"""Each queue at a glance: how many jobs are ready, scheduled, running and waiting (workflow
steps whose parents have not all ended), the age of the oldest
ready one, whether it is paused, how many live workers serve it, and what ended in it lately
(counts, throughput, pickup-wait percentiles).

Depths come from the hot table (`pgqueue_jobs`: waiting, queued and running jobs only); what ended
lately comes from the ten-second rows of `pgqueue_stats` that the workers write, never from
`pgqueue_finished_jobs`, so the cost does not grow with the jobs kept after they end.

Windows: "the last minute" is the stats rows whose ten-second bucket began in the last 60
seconds (50 to 60 seconds of history, the newest two seconds possibly not yet written);
likewise for 5 and 15 minutes. Throughput divides the jobs ended in the five-minute window by
the seconds that window really covers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgqueue import rollup
from pgqueue.inspect.workers import WORKER_IS_ALIVE

Conn = psycopg.Connection[Any]

# The windows of recent outcomes, in seconds; throughput and percentiles use the middle one.
WINDOWS = (60, 300, 900)
RATE_WINDOW = 300
# The outcomes that end a job (a retried attempt does not).
ENDED = ("succeeded", "failed", "cancelled")

# Ready, scheduled, running and waiting jobs per queue and the age of the oldest ready job, in
# one pass over the hot table (unfinished jobs only), whatever the number of finished jobs.
QUEUE_DEPTHS = """
SELECT queue,
       count(*) FILTER (WHERE status = 'queued' AND run_at <= now()) AS ready,
       count(*) FILTER (WHERE status = 'queued' AND run_at > now()) AS scheduled,
       count(*) FILTER (WHERE status = 'running') AS running,
       count(*) FILTER (WHERE status = 'waiting') AS waiting,
       extract(epoch FROM now() - min(run_at) FILTER (
           WHERE status = 'queued' AND run_at <= now()))::float8 AS oldest_ready_age
FROM pgqueue_jobs
GROUP BY queue
"""

# Outcomes per queue in each window, from the stats rows of the last 15 minutes (a range of
# the primary key, which begins with the bucket).
RECENT_OUTCOMES = f"""
SELECT queue, outcome,
       sum(count) FILTER (WHERE bucket >= now() - interval '{WINDOWS[0]} seconds')::bigint
           AS last_1m,
       sum(count) FILTER (WHERE bucket >= now() - interval '{WINDOWS[1]} seconds')::bigint
           AS last_5m,
       sum(count)::bigint AS last_15m
FROM pgqueue_stats
WHERE bucket >= now() - interval '{WINDOWS[2]} seconds'
GROUP BY queue, outcome
"""

# The pickup-wait histogram of each queue over the rate window: the rows' arrays added up
# element by element, every outcome included (each row counts the attempts it saw start).
RECENT_WAITS = f"""
SELECT s.queue, array_agg(s.n ORDER BY s.i) AS wait_buckets
FROM (
    SELECT st.queue, u.i, sum(u.n)::bigint AS n
    FROM pgqueue_stats AS st, unnest(st.wait_buckets) WITH ORDINALITY AS u(n, i)
    WHERE st.bucket >= now() - interval '{RATE_WINDOW} seconds'
    GROUP BY st.queue, u.i
) AS s
GROUP BY s.queue
"""

# Queues an operator has touched, paused or not: one row each.
QUEUE_SETTINGS = "SELECT name, paused_at, paused_by FROM pgqueue_queues"

# Live workers per queue they serve.
QUEUE_WORKERS = f"""
SELECT q.name, count(*) AS workers
FROM pgqueue_workers AS w, unnest(w.queues) AS q(name)
WHERE {WORKER_IS_ALIVE}
GROUP BY q.name
"""


@dataclass(frozen=True)
class Outcomes:
    """Attempts that ended in a window, by outcome (`retried`: failed, another attempt
    scheduled)."""

    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    cancelled: int = 0

    @property
    def ended(self) -> int:
        """Jobs that ended (a retried attempt did not end its job)."""
        return self.succeeded + self.failed + self.cancelled


@dataclass(frozen=True)
class QueueStatus:
    """One queue: depth, pause, workers, and what ended in it lately."""

    name: str
    ready: int  # queued and due now
    scheduled: int  # queued, due later (countdown, eta, retry backoff)
    running: int
    waiting: int  # workflow steps whose parents have not all ended
    oldest_ready_age: float | None  # seconds the oldest ready job has been due
    paused: bool
    paused_at: datetime | None
    paused_by: str | None
    workers: int  # live workers that serve this queue
    last_1m: Outcomes
    last_5m: Outcomes
    last_15m: Outcomes
    throughput: float  # jobs ended per second over the last 5 minutes
    wait_p50: float | None  # pickup wait (seconds) of the attempts started in the last 5 min
    wait_p95: float | None


@dataclass(frozen=True)
class QueuesReport:
    """Every queue known anywhere: with jobs, touched by an operator, with recent outcomes, or
    served by a live worker; sorted by name."""

    at: datetime  # the database's clock when read
    queues: tuple[QueueStatus, ...]


def _window_span(at: datetime, seconds: int) -> float:
    """Seconds covered by the buckets that began in the last `seconds`: from the first
    bucket boundary at or after `at - seconds` to `at`."""
    now = at.timestamp()
    first = math.ceil((now - seconds) / rollup.BUCKET_SECONDS) * rollup.BUCKET_SECONDS
    return max(now - first, 1e-9)


def queue_status(conn: Conn) -> QueuesReport:
    """Read every queue's status in one transaction (one clock for every number)."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        at_row = cur.execute("SELECT now() AS at").fetchone()
        assert at_row is not None
        at: datetime = at_row["at"]
        depths = {row["queue"]: row for row in cur.execute(QUEUE_DEPTHS).fetchall()}
        outcomes: dict[str, dict[str, dict[str, int]]] = {}
        for row in cur.execute(RECENT_OUTCOMES).fetchall():
            if row["outcome"] not in rollup.OUTCOMES:
                continue  # written by a newer pgqueue: not ours to show
            per_window = outcomes.setdefault(row["queue"], {})
            for window in ("last_1m", "last_5m", "last_15m"):
                per_window.setdefault(window, {})[row["outcome"]] = int(row[window] or 0)
        waits = {row["queue"]: row["wait_buckets"] for row in cur.execute(RECENT_WAITS)}
        settings = {row["name"]: row for row in cur.execute(QUEUE_SETTINGS).fetchall()}
        workers = {row["name"]: int(row["workers"]) for row in cur.execute(QUEUE_WORKERS)}
    span = _window_span(at, RATE_WINDOW)
    queues = []
    for name in sorted({*depths, *outcomes, *settings, *workers}):
        depth = depths.get(name, {})
        setting = settings.get(name, {})
        recent = {
            window: Outcomes(**outcomes.get(name, {}).get(window, {}))
            for window in ("last_1m", "last_5m", "last_15m")
        }
        histogram = waits.get(name) or rollup.empty_histogram()
        queues.append(
            QueueStatus(
                name=name,
                ready=int(depth.get("ready", 0)),
                scheduled=int(depth.get("scheduled", 0)),
                running=int(depth.get("running", 0)),
                waiting=int(depth.get("waiting", 0)),
                oldest_ready_age=depth.get("oldest_ready_age"),
                paused=setting.get("paused_at") is not None,
                paused_at=setting.get("paused_at"),
                paused_by=setting.get("paused_by"),
                workers=workers.get(name, 0),
                last_1m=recent["last_1m"],
                last_5m=recent["last_5m"],
                last_15m=recent["last_15m"],
                throughput=recent["last_5m"].ended / span,
                wait_p50=rollup.quantile(0.5, histogram),
                wait_p95=rollup.quantile(0.95, histogram),
            )
        )
    return QueuesReport(at=at, queues=tuple(queues))
