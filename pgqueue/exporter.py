"""The fleet-wide Prometheus exporter (`pgqueue exporter`): gauges of every queue, the workers,
the schedules and the database under them, read through `pgqueue.inspect` when scraped.

One exporter serves a whole fleet. Reads are cheap (the hot table, the last 15 minutes of
`pgqueue_stats`, the workers' rows and PostgreSQL's in-memory views) and happen at most once
per `min_interval`: scrapes in between, from several Prometheus servers or a dashboard, get
the last reading. A database that cannot be read makes a scrape answer `pgqueue_up 0` (and the
read's time), never an HTTP error, and the next read tries again on a new connection.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg

from pgqueue.app import App
from pgqueue.errors import PgQueueError
from pgqueue.inspect import queues, server, stuck, workers
from pgqueue.metrics import (
    Collector,
    CollectorRegistry,
    GaugeMetricFamily,
    Metric,
)
from pgqueue.revisions import check_schema

logger = logging.getLogger("pgqueue.exporter")

DEFAULT_MIN_INTERVAL = 5.0
# A read that takes longer is cut short (and the scrape answers pgqueue_up 0): below
# Prometheus' default scrape timeout of 10 s.
STATEMENT_TIMEOUT_MS = 5000
QUEUE_STATUSES = ("ready", "scheduled", "running", "waiting")
# What keeps the exporter running with pgqueue_up 0: the database away, refusing, or not
# (yet) migrated.
READ_TROUBLE = (psycopg.Error, OSError, PgQueueError)


@dataclass(frozen=True)
class Reading:
    """One read of the fleet's state (`ok` False: the read failed, and only the timing is
    known)."""

    ok: bool
    seconds: float  # how long the read took
    queues: tuple[queues.QueueStatus, ...] = ()
    workers_alive: int = 0
    overdue: tuple[stuck.OverdueSchedule, ...] = ()
    horizon_age: float = 0.0
    hot_tuples: server.TupleCounts | None = None
    read_at: float = field(default_factory=time.monotonic)


class FleetReader:
    """Reads the fleet's state on one connection of its own, at most once per
    `min_interval` seconds; thread-safe (concurrent scrapes share one read)."""

    def __init__(self, app: App, min_interval: float = DEFAULT_MIN_INTERVAL) -> None:
        self.app = app
        self.min_interval = min_interval
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._last: Reading | None = None
        self._failing = False

    def read(self) -> Reading:
        """The last reading if it is recent enough, else a new one."""
        with self._lock:
            last = self._last
            if last is not None and time.monotonic() - last.read_at < self.min_interval:
                return last
            self._last = self._read()
            return self._last

    def _read(self) -> Reading:
        began = time.monotonic()
        try:
            try:
                reading = self._read_within_timeout(self._connection())
            except psycopg.OperationalError:
                if self._conn is None or not self._conn.broken:
                    raise
                # The connection kept since the last read broke (a server restart, an idle
                # timeout): once more on a new one before reporting the database down.
                self._drop_connection()
                reading = self._read_within_timeout(self._connection())
        except READ_TROUBLE as exc:
            self._drop_connection()
            if not self._failing:  # one line when reads start failing, not one per scrape
                logger.warning(
                    "cannot read the database, serving pgqueue_up 0 until it can: %s",
                    " ".join(str(exc).split()) or type(exc).__name__,
                )
            self._failing = True
            return Reading(ok=False, seconds=time.monotonic() - began)
        if self._failing:
            logger.info("reading the database again")
            self._failing = False
        return dataclasses.replace(reading, seconds=time.monotonic() - began)

    def _read_within_timeout(self, conn: psycopg.Connection[Any]) -> Reading:
        if not self.app.transaction_pooling:
            return self._read_on(conn)  # the session's statement_timeout holds
        # Behind a transaction pooler a session setting would stay on a server connection
        # other clients use next: the timeout holds for this reading's transaction alone.
        with conn.transaction():
            conn.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
            return self._read_on(conn)

    @staticmethod
    def _read_on(conn: psycopg.Connection[Any]) -> Reading:
        report = queues.queue_status(conn)
        fleet = workers.fleet_summary(conn)
        return Reading(
            ok=True,
            seconds=0.0,
            queues=report.queues,
            workers_alive=fleet.workers_alive,
            overdue=fleet.overdue_schedules,
            horizon_age=server.horizon_age_seconds(conn),
            hot_tuples=server.hot_table_tuples(conn),
        )

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            conn = self.app.connect(autocommit=True, keepalives=True)
            try:
                if not self.app.transaction_pooling:  # else per reading: _read_within_timeout
                    conn.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT_MS}")
                check_schema(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):  # it is gone either way
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self._drop_connection()


class FleetCollector(Collector):
    """The exporter's metrics, from the FleetReader's latest reading."""

    def __init__(self, reader: FleetReader) -> None:
        self.reader = reader

    def collect(self) -> Iterator[Metric]:
        try:
            reading = self.reader.read()
        except Exception:  # a scrape answers, whatever went wrong
            logger.exception("reading the fleet's state failed")
            reading = Reading(ok=False, seconds=0.0)
        yield GaugeMetricFamily(
            "pgqueue_up",
            "1 if the exporter's last read of the database succeeded, else 0.",
            value=1 if reading.ok else 0,
        )
        yield GaugeMetricFamily(
            "pgqueue_exporter_read_seconds",
            "How long the exporter's last read of the database took.",
            value=reading.seconds,
        )
        if not reading.ok:
            return
        yield from _queue_metrics(reading.queues)

        yield GaugeMetricFamily(
            "pgqueue_workers_alive",
            "Workers whose heartbeat is recent and whose session holds its lock.",
            value=reading.workers_alive,
        )
        yield GaugeMetricFamily(
            "pgqueue_schedules_overdue",
            "Enabled periodic schedules that should have fired over a minute ago.",
            value=len(reading.overdue),
        )
        overdue = GaugeMetricFamily(
            "pgqueue_schedule_overdue_seconds",
            "How long past its tick each overdue periodic schedule is, by schedule.",
            labels=["schedule"],
        )
        for schedule in reading.overdue:
            overdue.add_metric([schedule.name], schedule.overdue_seconds)
        yield overdue
        yield GaugeMetricFamily(
            "pgqueue_xmin_horizon_age_seconds",
            "How long the oldest transaction holding back the database's xmin horizon has "
            "been open (0: none); vacuum cannot remove dead rows newer than it.",
            value=reading.horizon_age,
        )
        if reading.hot_tuples is not None:
            yield GaugeMetricFamily(
                "pgqueue_hot_table_dead_tuples",
                "Dead row versions in pgqueue_jobs (the statistics' estimate).",
                value=reading.hot_tuples.dead,
            )
            yield GaugeMetricFamily(
                "pgqueue_hot_table_live_tuples",
                "Live rows in pgqueue_jobs, queued and running jobs (the statistics' estimate).",
                value=reading.hot_tuples.live,
            )


def _queue_metrics(statuses: tuple[queues.QueueStatus, ...]) -> Iterator[Metric]:
    jobs = GaugeMetricFamily(
        "pgqueue_queue_jobs",
        "Jobs in each queue by status: ready (due now), scheduled (due later), running, "
        "waiting (workflow steps whose parents have not all ended).",
        labels=["queue", "status"],
    )
    oldest = GaugeMetricFamily(
        "pgqueue_queue_oldest_ready_age_seconds",
        "How long the oldest ready job of each queue has been due (0: none ready).",
        labels=["queue"],
    )
    paused = GaugeMetricFamily(
        "pgqueue_queue_paused", "1 if the queue is paused, else 0.", labels=["queue"]
    )
    served = GaugeMetricFamily(
        "pgqueue_queue_workers", "Live workers that serve each queue.", labels=["queue"]
    )
    for queue in statuses:
        for status in QUEUE_STATUSES:
            jobs.add_metric([queue.name, status], getattr(queue, status))
        oldest.add_metric([queue.name], queue.oldest_ready_age or 0.0)
        paused.add_metric([queue.name], 1 if queue.paused else 0)
        served.add_metric([queue.name], queue.workers)
    yield from (jobs, oldest, paused, served)


def exporter_registry(reader: FleetReader) -> CollectorRegistry:
    """A registry of the fleet's metrics, for `metrics.serve` or an ASGI/WSGI app
    (prometheus_client.make_asgi_app) mounted by the dashboard."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(reader))
    return registry
