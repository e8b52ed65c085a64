"""What has stopped moving: running jobs past their task's timeout or running for hours, workers
whose heartbeat stopped, periodic schedules that should have fired and have not.

Each read is bounded by the number of running jobs, workers or schedules, never by the queue's
backlog or the finished jobs kept: the running jobs are found through the hot table's partial
index of running jobs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import class_row

from pgqueue import queries

Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class LongRunningJob:
    """A running job past its time limit (`time_limit` seconds, when known) by more than the
    grace asked for, or running for longer than asked."""

    id: int
    queue: str
    task_name: str
    attempts: int
    worker_id: int | None
    worker_name: str | None
    started_at: datetime
    running_seconds: float
    time_limit: float | None


_LONG_RUNNING = """
SELECT j.id, j.queue, j.task_name, j.attempts, j.worker_id, w.name AS worker_name,
       j.started_at, extract(epoch FROM now() - j.started_at)::float8 AS running_seconds,
       l.time_limit
FROM pgqueue_jobs j
LEFT JOIN unnest(%(tasks)s::text[], %(limits)s::float8[]) AS l(task_name, time_limit)
       ON l.task_name = j.task_name
LEFT JOIN pgqueue_workers w ON w.id = j.worker_id
WHERE j.status = 'running' AND j.worker_id IS NOT NULL
  AND (j.started_at < now() - (l.time_limit + %(grace)s) * interval '1 second'
       OR j.started_at < now() - %(running_for)s * interval '1 second')
ORDER BY j.started_at
LIMIT %(limit)s
"""


def long_running_jobs(
    conn: Conn,
    time_limits: Mapping[str, float],
    *,
    grace: float,
    running_for: float,
    limit: int = 20,
) -> list[LongRunningJob]:
    """Running jobs past their task's time limit (`time_limits`: task name -> seconds, from the
    app's tasks) by more than `grace` seconds, or running for more than `running_for` seconds
    whatever their task; oldest first, at most `limit`."""
    params = {
        "tasks": list(time_limits),
        "limits": list(time_limits.values()),
        "grace": grace,
        "running_for": running_for,
        "limit": limit,
    }
    with conn.cursor(row_factory=class_row(LongRunningJob)) as cur:
        return cur.execute(_LONG_RUNNING, params).fetchall()


@dataclass(frozen=True)
class SilentWorker:
    """A registered worker whose last heartbeat is older than asked."""

    id: int
    name: str
    hostname: str
    pid: int
    heartbeat_at: datetime
    silent_seconds: float
    running_jobs: int


_SILENT_WORKERS = """
SELECT w.id, w.name, w.hostname, w.pid, w.heartbeat_at,
       extract(epoch FROM now() - w.heartbeat_at)::float8 AS silent_seconds,
       (SELECT count(*) FROM pgqueue_jobs j
        WHERE j.worker_id = w.id AND j.status = 'running')::int AS running_jobs
FROM pgqueue_workers w
WHERE w.heartbeat_at < now() - %(older_than)s * interval '1 second'
ORDER BY w.heartbeat_at
LIMIT %(limit)s
"""

_WORKERS_HEARD = """
SELECT count(*)::int FROM pgqueue_workers
WHERE heartbeat_at >= now() - %(older_than)s * interval '1 second'
"""


def silent_workers(conn: Conn, older_than: float, limit: int = 20) -> list[SilentWorker]:
    """Workers whose heartbeat is older than `older_than` seconds, the longest silent first.

    A live worker's maintenance declares such a worker lost and rescues its jobs within about
    a second, so one that stays listed here means that no worker's maintenance is running.
    """
    params = {"older_than": older_than, "limit": limit}
    with conn.cursor(row_factory=class_row(SilentWorker)) as cur:
        return cur.execute(_SILENT_WORKERS, params).fetchall()


def workers_heard_from(conn: Conn, within: float) -> int:
    """How many workers sent a heartbeat in the last `within` seconds."""
    row = conn.execute(_WORKERS_HEARD, {"older_than": within}).fetchone()
    return int(row[0]) if row is not None else 0


@dataclass(frozen=True)
class OverdueSchedule:
    name: str
    task_name: str
    next_fire_at: datetime
    overdue_seconds: float


# The schedulers' own test for a schedule that has not fired (periodic.py warns with it about
# the schedules of tasks its app does not know); here with no task known, so every schedule.
_OVERDUE = f"""
SELECT o.name, o.task_name, o.next_fire_at,
       extract(epoch FROM now() - o.next_fire_at)::float8 AS overdue_seconds
FROM ({queries.OVERDUE_FOREIGN_SCHEDULES}) o
ORDER BY o.next_fire_at
"""


def overdue_schedules(conn: Conn, grace: float) -> list[OverdueSchedule]:
    """Enabled schedules whose next tick is more than `grace` seconds past: no running
    scheduler fires them (a scheduler that registers the task fires a tick within about a
    second)."""
    with conn.cursor(row_factory=class_row(OverdueSchedule)) as cur:
        return cur.execute(_OVERDUE, {"grace": grace, "task_names": []}).fetchall()
