"""Maintenance every worker runs, each pass idempotent, so no leader is needed: rescue the jobs
of lost workers, expire queued jobs past their deadline, and catch cancel requests whose
notification was missed.

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
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            queries.RESCUE_LOST_JOBS,
            {"lock_grace": lock_grace, "heartbeat_timeout": heartbeat_timeout},
        )
        return await cur.fetchall()


async def expire_queued_jobs(conn: psycopg.AsyncConnection[Any]) -> list[dict[str, Any]]:
    """End queued jobs past their `expires_at` as CANCELLED (type Expired); returns them."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(queries.EXPIRE_QUEUED_JOBS)
        return await cur.fetchall()


async def cancel_requests_for(conn: psycopg.AsyncConnection[Any], worker_id: int) -> list[int]:
    """Ids of this worker's running jobs whose cancellation was requested (the backstop for
    a cancel notification lost while the worker was reconnecting)."""
    cur = await conn.execute(queries.CANCEL_REQUESTS_FOR_WORKER, {"worker_id": worker_id})
    return [row[0] for row in await cur.fetchall()]
