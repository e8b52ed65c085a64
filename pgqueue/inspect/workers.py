"""The fleet as the database sees it: live workers with the jobs each runs, the workers that
left it lately (stopped, or lost and rescued), and the one-line summary `pgqueue status` ends
with (workers alive, periodic schedules overdue).

A worker is alive when its heartbeat is recent and its session still holds its advisory lock,
the test the workers' own rescue applies: a row whose process was killed stays in
`pgqueue_workers` until a live worker removes it, which never happens when it was the last one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgqueue import periodic
from pgqueue._names import ADVISORY_LOCK_NAMESPACE
from pgqueue.config import WorkerSettings
from pgqueue.inspect import stuck
from pgqueue.inspect.stuck import OverdueSchedule

Conn = psycopg.Connection[Any]

_DEFAULTS = WorkerSettings()
# The workers' own defaults for declaring a worker lost (config.WorkerSettings): heartbeat
# older than this, or older than the lock grace with its session lock gone.
LOST_AFTER = _DEFAULTS.heartbeat_timeout
LOCK_GRACE = _DEFAULTS.lock_grace

# Whether worker `w` is alive: the rescue's test turned around (see queries.RESCUE_LOST_JOBS).
# pg_locks is read per worker row: a handful of rows, and the lock table is in memory.
WORKER_IS_ALIVE = f"""(
    w.heartbeat_at > now() - interval '{LOST_AFTER} seconds'
    AND (GREATEST(w.heartbeat_at, pg_postmaster_start_time())
             > now() - interval '{LOCK_GRACE} seconds'
         OR EXISTS (
            SELECT 1 FROM pg_locks AS l
            WHERE l.locktype = 'advisory'
              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND l.classid = {ADVISORY_LOCK_NAMESPACE}::oid
              AND l.objid = w.id::oid
              AND l.objsubid = 2
              AND l.granted)))"""

# Every registered worker, alive or not yet removed: a few rows, one per worker process.
LIVE_WORKERS = f"""
SELECT w.id, w.name, w.hostname, w.pid, w.queues, w.concurrency, w.pool, w.version,
       w.started_at, w.heartbeat_at,
       extract(epoch FROM now() - w.heartbeat_at)::float8 AS heartbeat_age,
       {WORKER_IS_ALIVE} AS alive
FROM pgqueue_workers AS w
ORDER BY w.name, w.id
"""

# The running jobs of the whole fleet, through the partial index of running jobs: as many
# rows as the workers' concurrency adds up to.
RUNNING_JOBS = """
SELECT worker_id, id, task_name, queue, started_at,
       extract(epoch FROM now() - started_at)::float8 AS running_for
FROM pgqueue_jobs
WHERE status = 'running'
ORDER BY worker_id, id
"""

# The workers that left most recently, newest first, through the index on ended_at.
PAST_WORKERS = """
SELECT id, name, hostname, pid, queues, concurrency, pool, version, started_at, heartbeat_at,
       ended_at, ended_how, rescued
FROM pgqueue_past_workers
ORDER BY ended_at DESC, id DESC
LIMIT %(limit)s
"""

# How many workers are alive and how many rows are left by workers that are not: one count
# over the workers' table.
WORKER_COUNTS = f"""
SELECT now() AS at,
       count(*) FILTER (WHERE {WORKER_IS_ALIVE}) AS alive,
       count(*) FILTER (WHERE NOT {WORKER_IS_ALIVE}) AS stale
FROM pgqueue_workers AS w
"""


@dataclass(frozen=True)
class RunningJob:
    """A job a worker runs now."""

    id: int
    task_name: str
    queue: str
    started_at: datetime | None
    running_for: float | None  # seconds


@dataclass(frozen=True)
class Worker:
    """A row of `pgqueue_workers`: a worker process, alive or not yet removed (`alive`)."""

    id: int
    name: str
    hostname: str
    pid: int
    queues: tuple[str, ...]
    concurrency: int
    pool: str | None
    version: str | None
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age: float  # seconds since its last heartbeat, by the database's clock
    alive: bool
    running: tuple[RunningJob, ...]


@dataclass(frozen=True)
class PastWorker:
    """A worker that stopped (`ended_how` 'stopped') or was declared lost ('lost'), with how
    many of its jobs were rescued."""

    id: int
    name: str
    hostname: str
    pid: int
    queues: tuple[str, ...]
    concurrency: int
    pool: str | None
    version: str | None
    started_at: datetime
    heartbeat_at: datetime
    ended_at: datetime
    ended_how: str
    rescued: int


@dataclass(frozen=True)
class Fleet:
    """`pgqueue workers`: the live workers and the ones that left lately."""

    at: datetime
    workers: tuple[Worker, ...]
    past: tuple[PastWorker, ...]


@dataclass(frozen=True)
class FleetSummary:
    """The last lines of `pgqueue status`."""

    at: datetime
    workers_alive: int
    workers_stale: int  # rows of workers that are not alive, not yet removed by a rescue
    overdue_schedules: tuple[OverdueSchedule, ...]


def list_workers(conn: Conn, past_limit: int = 10) -> Fleet:
    """Every registered worker with the jobs it runs, and the `past_limit` workers that left
    most recently."""
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        at = periodic.db_now(conn)
        rows = cur.execute(LIVE_WORKERS).fetchall()
        running: dict[int, list[RunningJob]] = {}
        for job in cur.execute(RUNNING_JOBS).fetchall():
            running.setdefault(job["worker_id"], []).append(
                RunningJob(
                    id=job["id"],
                    task_name=job["task_name"],
                    queue=job["queue"],
                    started_at=job["started_at"],
                    running_for=job["running_for"],
                )
            )
        past = cur.execute(PAST_WORKERS, {"limit": past_limit}).fetchall()
    workers = tuple(
        Worker(
            **{key: value for key, value in row.items() if key != "queues"},
            queues=tuple(row["queues"]),
            running=tuple(running.get(row["id"], ())),
        )
        for row in rows
    )
    past_workers = tuple(
        PastWorker(
            **{key: value for key, value in row.items() if key != "queues"},
            queues=tuple(row["queues"]),
        )
        for row in past
    )
    return Fleet(at=at, workers=workers, past=past_workers)


def overdue_schedules(conn: Conn) -> tuple[OverdueSchedule, ...]:
    """The schedules `pgqueue periodic list` shows as overdue: enabled, and over a minute late
    (no running scheduler registers their task, or none runs at all)."""
    return tuple(stuck.overdue_schedules(conn, grace=periodic.UNFIRED_GRACE.total_seconds()))


def fleet_summary(conn: Conn) -> FleetSummary:
    """Workers alive (and rows left by dead ones), and the schedules overdue."""
    with conn.transaction():
        row = conn.execute(WORKER_COUNTS).fetchone()
        assert row is not None
        overdue = overdue_schedules(conn)
    return FleetSummary(
        at=row[0], workers_alive=row[1], workers_stale=row[2], overdue_schedules=overdue
    )
