"""Rows written by hand for the read-side tests: stats rows (which workers flush), finished
jobs, worker rows alive or not, past workers and schedules, each as the writers' contracts
describe them (docs: pgqueue_stats and history semantics)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import psycopg

from pgqueue import rollup
from pgqueue.inspect.workers import LOCK_GRACE
from pgqueue.schema import ADVISORY_LOCK_NAMESPACE
from tests.conftest import wait_until

Conn = psycopg.Connection[Any]

# The start of the ten-second bucket `buckets_ago` buckets before the current one, on the
# database's clock, as workers compute it.
BUCKET = (
    "to_timestamp(floor(extract(epoch FROM now()) / 10) * 10)"
    " - %(buckets_ago)s * interval '10 seconds'"
)


def histogram(values: Sequence[float]) -> list[int]:
    counts = rollup.empty_histogram()
    for value in values:
        counts[rollup.bucket_index(value)] += 1
    return counts


def add_stats(
    conn: Conn,
    queue: str,
    outcome: str,
    count: int,
    *,
    buckets_ago: int = 0,
    waits: Sequence[float] = (),
) -> None:
    """One worker's flush: `count` attempts of `outcome` in `queue`, in the bucket
    `buckets_ago` buckets back, with these pickup waits (added up on conflict)."""
    wait_buckets = histogram(waits) if waits else rollup.empty_histogram()
    conn.execute(
        f"""INSERT INTO pgqueue_stats AS s (bucket, queue, outcome, count, wait_sum,
               wait_buckets, duration_sum, duration_buckets)
            VALUES ({BUCKET}, %(queue)s, %(outcome)s, %(count)s, %(wait_sum)s,
                    %(wait_buckets)s, 0, %(duration_buckets)s)
            ON CONFLICT (bucket, queue, outcome) DO UPDATE SET
                count = s.count + excluded.count,
                wait_sum = s.wait_sum + excluded.wait_sum,
                wait_buckets = ARRAY(
                    SELECT a + b FROM unnest(s.wait_buckets, excluded.wait_buckets) AS u(a, b))""",
        {
            "buckets_ago": buckets_ago,
            "queue": queue,
            "outcome": outcome,
            "count": count,
            "wait_sum": float(sum(waits)),
            "wait_buckets": wait_buckets,
            "duration_buckets": rollup.empty_histogram(),
        },
    )


def add_job(
    conn: Conn,
    task: str = "tests.task",
    *,
    queue: str = "default",
    status: str = "queued",
    run_in: float = 0.0,
    created_ago: float = 0.0,
    started_ago: float | None = None,
    worker_id: int | None = None,
    attempts: int = 0,
    max_attempts: int = 3,
) -> int:
    """A queued or running job in the hot table; its id."""
    row = conn.execute(
        """INSERT INTO pgqueue_jobs (queue, task_name, status, run_at, created_at, started_at,
               worker_id, attempts, max_attempts, lease)
           VALUES (%(queue)s, %(task)s, %(status)s::pgqueue_job_status,
                   now() + %(run_in)s * interval '1 second',
                   now() - %(created_ago)s * interval '1 second',
                   now() - %(started_ago)s * interval '1 second', %(worker_id)s, %(attempts)s,
                   %(max_attempts)s,
                   CASE WHEN %(status)s::text = 'running'
                        THEN nextval('pgqueue_job_lease_seq') END)
           RETURNING id""",
        {
            "queue": queue,
            "task": task,
            "status": status,
            "run_in": run_in,
            "created_ago": created_ago,
            "started_ago": started_ago,
            "worker_id": worker_id,
            "attempts": attempts,
            "max_attempts": max_attempts,
        },
    ).fetchone()
    assert row is not None
    return int(row[0])


def add_finished_job(
    conn: Conn,
    task: str = "tests.task",
    *,
    queue: str = "default",
    status: str = "succeeded",
    finished_ago: float = 0.0,
    created_ago: float | None = None,
    attempts: int = 1,
    worker_id: int | None = None,
    result: Any = None,
    error: dict[str, Any] | None = None,
    history: list[dict[str, Any]] | None = None,
    periodic_name: str | None = None,
    periodic_fire_at_ago: float | None = None,
) -> int:
    """A finished job, with an id from the jobs' own identity (as if it had moved there)."""
    created = finished_ago + 1 if created_ago is None else created_ago
    row = conn.execute(
        """INSERT INTO pgqueue_finished_jobs (id, queue, task_name, args, kwargs, status,
               priority, run_at, attempts, max_attempts, worker_id, result, error, created_at,
               started_at, finished_at, periodic_name, periodic_fire_at, history)
           VALUES (nextval(pg_get_serial_sequence('pgqueue_jobs', 'id')), %(queue)s, %(task)s,
                   '[1, "two"]', '{"three": 3}', %(status)s, 0,
                   now() - %(created)s * interval '1 second', %(attempts)s, 3, %(worker_id)s,
                   %(result)s, %(error)s, now() - %(created)s * interval '1 second',
                   now() - (%(finished_ago)s + 0.5) * interval '1 second',
                   now() - %(finished_ago)s * interval '1 second', %(periodic_name)s,
                   now() - %(fire_ago)s * interval '1 second', %(history)s)
           RETURNING id""",
        {
            "queue": queue,
            "task": task,
            "status": status,
            "created": created,
            "attempts": attempts,
            "worker_id": worker_id,
            "result": json.dumps(result) if result is not None else None,
            "error": json.dumps(error) if error is not None else None,
            "finished_ago": finished_ago,
            "periodic_name": periodic_name,
            "fire_ago": periodic_fire_at_ago,
            "history": json.dumps(history) if history is not None else None,
        },
    ).fetchone()
    assert row is not None
    return int(row[0])


def add_worker(
    conn: Conn,
    name: str,
    queues: Sequence[str] = ("default",),
    *,
    heartbeat_ago: float = 0.0,
    started_ago: float = 60.0,
    locked_by: Conn | None = None,
) -> int:
    """A row in pgqueue_workers; `locked_by` (another session) takes its advisory lock, as
    the worker's own session does."""
    row = conn.execute(
        """INSERT INTO pgqueue_workers (name, hostname, pid, queues, concurrency, started_at,
               heartbeat_at, pool, version)
           VALUES (%(name)s, 'test-host', 4242, %(queues)s, 4,
                   now() - %(started_ago)s * interval '1 second',
                   now() - %(heartbeat_ago)s * interval '1 second', 'thread', '9.9.9')
           RETURNING id""",
        {
            "name": name,
            "queues": list(queues),
            "started_ago": started_ago,
            "heartbeat_ago": heartbeat_ago,
        },
    ).fetchone()
    assert row is not None
    worker_id = int(row[0])
    if locked_by is not None:
        locked_by.execute("SELECT pg_advisory_lock(%s, %s)", (ADVISORY_LOCK_NAMESPACE, worker_id))
    return worker_id


def wait_past_restart_grace(conn: Conn) -> None:
    """Until the server has been up longer than the lock grace: right after a restart (which
    ends every session, so every worker's lock is gone for a moment) a worker keeps counting
    as alive without its lock, as the rescue allows it to reconnect."""
    wait_until(
        lambda: (
            conn.execute(
                "SELECT now() - pg_postmaster_start_time() > %s * interval '1 second'",
                (LOCK_GRACE + 0.5,),
            ).fetchone()
            == (True,)
        ),
        what="the server up for longer than the lock grace",
    )


def add_past_worker(
    conn: Conn, worker_id: int, name: str, *, ended_ago: float, how: str, rescued: int = 0
) -> None:
    conn.execute(
        """INSERT INTO pgqueue_past_workers (id, name, hostname, pid, queues, concurrency, pool,
               version, started_at, heartbeat_at, ended_at, ended_how, rescued)
           VALUES (%(id)s, %(name)s, 'old-host', 77, ARRAY['default'], 2, 'process', '0.0.1',
                   now() - interval '1 hour', now() - %(ended_ago)s * interval '1 second',
                   now() - %(ended_ago)s * interval '1 second', %(how)s, %(rescued)s)""",
        {"id": worker_id, "name": name, "ended_ago": ended_ago, "how": how, "rescued": rescued},
    )


def add_schedule(
    conn: Conn,
    name: str,
    *,
    due_ago: float,
    enabled: bool = True,
    source: str = "cli",
    declared: bool = True,
) -> None:
    conn.execute(
        """INSERT INTO pgqueue_periodic (name, task_name, every_seconds, source, declared,
               enabled, next_fire_at)
           VALUES (%(name)s, 'tests.periodic_task', 60, %(source)s, %(declared)s, %(enabled)s,
                   now() - %(due_ago)s * interval '1 second')""",
        {
            "name": name,
            "source": source,
            "declared": declared,
            "enabled": enabled,
            "due_ago": due_ago,
        },
    )
