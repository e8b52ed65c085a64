"""Maintenance every worker runs, each pass idempotent, so no leader is needed: rescue the jobs
of lost workers (and, less often, running jobs whose worker row is gone), expire queued jobs
past their deadline, catch cancel requests whose notification was missed, and prune finished
jobs and the record of past workers.

A worker is lost when its session advisory lock is gone (PostgreSQL drops it with the session:
a crash, `kill -9`, a closed connection) and its heartbeat is older than `lock_grace`, or when
its heartbeat is older than `heartbeat_timeout` whatever its lock (a session left behind by a
host cut off from the network). Its running jobs go back to the queue, or end FAILED with
"worker lost" when they have no attempts left, so a job that kills its worker cannot loop.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from pgqueue import queries


async def rescue_lost_jobs(
    conn: psycopg.AsyncConnection[Any], *, lock_grace: float, heartbeat_timeout: float
) -> list[dict[str, Any]]:
    """Run one rescue pass; returns the rescued jobs (id, task_name, attempts, status)."""
    return await _rescue(
        conn,
        queries.RESCUE_LOST_JOBS,
        {"lock_grace": lock_grace, "heartbeat_timeout": heartbeat_timeout},
    )


async def rescue_orphaned_jobs(conn: psycopg.AsyncConnection[Any]) -> list[dict[str, Any]]:
    """Rescue running jobs whose worker row no longer exists; returns them, as above."""
    return await _rescue(conn, queries.RESCUE_ORPHANED_JOBS, {})


async def _rescue(
    conn: psycopg.AsyncConnection[Any], statement: str, params: dict[str, Any]
) -> list[dict[str, Any]]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(statement, params)
        return await cur.fetchall()


async def expire_queued_jobs(conn: psycopg.AsyncConnection[Any]) -> list[dict[str, Any]]:
    """End queued jobs past their `expires_at` as CANCELLED (type Expired); returns them."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(queries.EXPIRE_QUEUED_JOBS)
        return await cur.fetchall()


async def jobs_held_by(
    conn: psycopg.AsyncConnection[Any], worker_id: int, min_age: float
) -> list[tuple[int, int]]:
    """(id, lease) of the jobs running under `worker_id` for more than `min_age` seconds."""
    cur = await conn.execute(
        queries.JOBS_HELD_BY_WORKER, {"worker_id": worker_id, "min_age": min_age}
    )
    return [(row[0], row[1]) for row in await cur.fetchall()]


async def cancel_requests_for(conn: psycopg.AsyncConnection[Any], worker_id: int) -> list[int]:
    """Ids of this worker's running jobs whose cancellation was requested (the backstop for
    a cancel notification lost while the worker was reconnecting)."""
    cur = await conn.execute(queries.CANCEL_REQUESTS_FOR_WORKER, {"worker_id": worker_id})
    return [row[0] for row in await cur.fetchall()]


FINISHED = ("succeeded", "failed", "cancelled")


async def prune_past_workers(conn: psycopg.AsyncConnection[Any]) -> int:
    """Forget the workers that stopped or were lost more than a day ago; returns how many."""
    cur = await conn.execute(queries.PRUNE_PAST_WORKERS)
    return cur.rowcount


async def prune_finished_jobs(
    conn: psycopg.AsyncConnection[Any],
    older_than: float,
    statuses: tuple[str, ...] = FINISHED,
    batch: int = 1000,
    max_batches: int = 10,
) -> int:
    """Delete jobs that finished more than `older_than` seconds ago; returns how many.

    At most `max_batches` batches per call, so a worker's maintenance pass stays short; the
    next pass goes on where this one stopped (and the worker runs it soon when this one was
    cut short).
    """
    deleted = 0
    params = {"older_than": older_than, "statuses": list(statuses), "batch": batch}
    for _ in range(max_batches):
        cur = await conn.execute(queries.PRUNE_FINISHED_JOBS, params)
        deleted += cur.rowcount
        if cur.rowcount < batch:
            await conn.execute(queries.PRUNE_PERIODIC_TICKS, {"older_than": older_than})
            await conn.execute(queries.PRUNE_UNIQUE_PERIODS, {"older_than": older_than})
            await conn.execute(queries.PRUNE_WORKFLOWS, {"older_than": older_than})
            break
    return deleted


def prune_finished_jobs_sync(
    conn: psycopg.Connection[Any],
    older_than: float,
    statuses: tuple[str, ...] = FINISHED,
    batch: int = 1000,
) -> int:
    """`pgqueue jobs prune`: delete, batch by batch, every job that finished before the cutoff."""
    deleted = 0
    params = {"older_than": older_than, "statuses": list(statuses), "batch": batch}
    while True:
        cur = conn.execute(queries.PRUNE_FINISHED_JOBS, params)
        deleted += cur.rowcount
        if cur.rowcount < batch:
            conn.execute(queries.PRUNE_PERIODIC_TICKS, {"older_than": older_than})
            conn.execute(queries.PRUNE_UNIQUE_PERIODS, {"older_than": older_than})
            conn.execute(queries.PRUNE_WORKFLOWS, {"older_than": older_than})
            return deleted
