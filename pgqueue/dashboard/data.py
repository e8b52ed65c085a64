"""What the overview charts: the last hour, minute by minute.

- Jobs ended per minute by outcome, and pickup-wait and attempt-duration percentiles per
  minute, from the ten-second rows of `pgqueue_stats` that the workers write (a range of its
  primary key: the cost does not grow with the jobs kept).
- Queue depth over time cannot be read back from the tables, so the dashboard samples it
  (`DepthSampler`: one count over the hot table every 10 s, by one thread per dashboard
  process, however many browsers are open) and keeps the last hour in memory. The chart fills
  from the moment the dashboard starts.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgqueue import rollup
from pgqueue.app import App
from pgqueue.inspect.queues import QUEUE_DEPTHS

logger = logging.getLogger("pgqueue.dashboard")

HOUR = 3600
SAMPLE_INTERVAL = 10.0  # seconds between two depth samples


def _bucket_sums(column: str) -> str:
    """`column`'s histograms added up bucket by bucket, as one array: a sum per array element
    (no unnest, so each stats row is read once, not once per bucket)."""
    sums = ", ".join(f"sum({column}[{i}])" for i in range(1, len(rollup.BOUNDS) + 2))
    return f"ARRAY[{sums}]::bigint[]"


def _ended(outcome: str) -> str:
    return f"sum(count) FILTER (WHERE outcome = '{outcome}')::bigint AS {outcome}"


# Per minute of the last hour: the attempts that ended in each outcome, and the pickup-wait
# and attempt-duration histograms of all of them, in one pass over the hour's ten-second rows
# (a range of the primary key, which begins with the bucket).
LAST_HOUR = f"""
SELECT date_trunc('minute', bucket) AS minute, {", ".join(map(_ended, rollup.OUTCOMES))},
       {_bucket_sums("wait_buckets")} AS wait, {_bucket_sums("duration_buckets")} AS duration
FROM pgqueue_stats
WHERE bucket >= date_trunc('minute', now()) - interval '59 minutes'
GROUP BY 1
"""


@dataclass(frozen=True)
class Minute:
    at: datetime
    ended: dict[str, int]  # outcome -> count
    wait: dict[str, float | None]  # "p50", "p95", "p99" -> seconds
    duration: dict[str, float | None]


def last_hour(conn: psycopg.Connection[Any], now: datetime) -> list[Minute]:
    """The 60 minutes up to `now` (the database's clock), oldest first, every minute present
    (zeros where nothing ended)."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = {row["minute"]: row for row in cur.execute(LAST_HOUR).fetchall()}
    last = now.replace(second=0, microsecond=0)
    minutes = []
    for back in range(59, -1, -1):
        at = last - timedelta(minutes=back)
        row = rows.get(at)
        minutes.append(
            Minute(
                at=at,
                ended={o: int(row[o] or 0) if row else 0 for o in rollup.OUTCOMES},
                wait=_percentiles(row["wait"] if row else None),
                duration=_percentiles(row["duration"] if row else None),
            )
        )
    return minutes


def _percentiles(sums: list[int | None] | None) -> dict[str, float | None]:
    counts = [c or 0 for c in sums] if sums else rollup.empty_histogram()
    return {
        "p50": rollup.quantile(0.5, counts),
        "p95": rollup.quantile(0.95, counts),
        "p99": rollup.quantile(0.99, counts),
    }


@dataclass(frozen=True)
class DepthSample:
    at: datetime  # the database's clock
    ready: int
    scheduled: int
    running: int
    waiting: int


@dataclass
class DepthSampler:
    """Samples the fleet's queue depth (all queues together) every `interval` seconds on a
    daemon thread with its own connection, keeping the last hour. Started by the first reader;
    a failed sample is skipped (and logged once per outage), never fatal."""

    app: App
    interval: float = SAMPLE_INTERVAL
    samples: collections.deque[DepthSample] = field(
        default_factory=lambda: collections.deque(maxlen=int(HOUR / SAMPLE_INTERVAL) + 1)
    )
    _started: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)

    def history(self) -> list[DepthSample]:
        self.start()
        with self._lock:
            return list(self.samples)

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._run, name="pgqueue-dashboard-depth", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        conn: psycopg.Connection[Any] | None = None
        failing = False
        while not self._stop.is_set():
            try:
                if conn is None or conn.closed or conn.broken:
                    conn = self.app.connect(autocommit=True, keepalives=True)
                sample = self.sample(conn)
                with self._lock:
                    self.samples.append(sample)
                failing = False
            except Exception as exc:  # a sampler never dies: the next tick tries again
                if not failing:
                    logger.warning("queue depth sample failed: %s", " ".join(str(exc).split()))
                failing = True
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        conn.close()
                    conn = None
            self._stop.wait(self.interval)
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    @staticmethod
    def sample(conn: psycopg.Connection[Any]) -> DepthSample:
        totals = {"ready": 0, "scheduled": 0, "running": 0, "waiting": 0}
        with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
            at_row = cur.execute("SELECT now() AS at").fetchone()
            for row in cur.execute(QUEUE_DEPTHS).fetchall():
                for key in totals:
                    totals[key] += int(row[key])
        assert at_row is not None
        return DepthSample(at=at_row["at"], **totals)
