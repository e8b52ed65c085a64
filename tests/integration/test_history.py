"""A job's attempt history, written by the engine: a retried attempt and a lost one are appended
to `history`, a finished job keeps its worker and its history, and workers that stop or are
lost are kept among the past workers with the jobs taken back from them."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

import pgqueue
from pgqueue import queries
from pgqueue.claim import claim_params
from pgqueue.maintenance import prune_past_workers, rescue_lost_jobs, rescue_orphaned_jobs
from tests.conftest import WorkerThread, wait_until

StartWorker = Callable[..., WorkerThread]


class Flaky(ConnectionError):
    """A retryable failure."""


def _row(conn: psycopg.Connection[Any], job_id: int) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT *, status::text AS status FROM pgqueue_all_jobs WHERE id = %s", (job_id,)
        ).fetchone()
    assert row is not None
    return row


def _past(conn: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute("SELECT * FROM pgqueue_past_workers ORDER BY id").fetchall()


def _worker(conn: psycopg.Connection[Any], heartbeat_age: float = 0.0) -> int:
    row = conn.execute(
        "INSERT INTO pgqueue_workers (name, hostname, pid, queues, concurrency, pool, version,"
        " heartbeat_at) VALUES ('w', 'host', 7, '{default}', 2, 'thread', '9.9',"
        " now() - %s * interval '1 second') RETURNING id",
        (heartbeat_age,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _claim(conn: psycopg.Connection[Any], worker_id: int, n: int = 1) -> list[int]:
    rows = conn.execute(queries.CLAIM_JOBS, claim_params(["default"], n, worker_id)).fetchall()
    return [row[0] for row in rows]


def _parse(ts: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(ts)


def test_each_retried_attempt_is_appended_to_the_history(
    app: pgqueue.App, conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    @app.task(max_attempts=3, autoretry_for=(ConnectionError,), retry_backoff=False)
    def recovers() -> str:
        context = pgqueue.current_job()
        assert context is not None
        if context.attempt < 3:
            raise Flaky(f"down on attempt {context.attempt}")
        return "ok"

    worker = start_worker(app)
    job = recovers.delay()
    assert job.wait(timeout=30) == "ok"
    row = _row(conn, job.id)
    history = row["history"]
    assert [(h["attempt"], h["outcome"]) for h in history] == [(1, "retried"), (2, "retried")]
    assert [h["error"]["message"] for h in history] == ["down on attempt 1", "down on attempt 2"]
    assert all(h["worker_id"] == worker.worker.presence.worker_id for h in history)
    for entry in history:
        assert _parse(entry["started_at"]) <= _parse(entry["ended_at"])
        assert "result" not in entry
    assert _parse(history[1]["started_at"]) >= _parse(history[0]["ended_at"])
    # The last attempt is the row itself, and it keeps the worker that ran it.
    assert (row["status"], row["attempts"], row["result"]) == ("succeeded", 3, "ok")
    assert row["worker_id"] == worker.worker.presence.worker_id


def test_a_job_that_succeeds_at_once_has_no_history_and_keeps_its_worker(
    app: pgqueue.App, conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    @app.task
    def fine() -> int:
        return 1

    worker = start_worker(app)
    job = fine.delay()
    assert job.wait(timeout=30) == 1
    row = _row(conn, job.id)
    assert row["history"] is None
    assert row["worker_id"] == worker.worker.presence.worker_id


def _rescue(dsn: str, orphans: bool = False) -> list[dict[str, Any]]:
    async def scenario() -> list[dict[str, Any]]:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as aconn:
            if orphans:
                return await rescue_orphaned_jobs(aconn)
            # Declared lost by its heartbeat alone: no wait for the server's uptime.
            return await rescue_lost_jobs(aconn, lock_grace=3600, heartbeat_timeout=30)

    return asyncio.run(scenario())


def test_a_lost_worker_is_kept_with_the_jobs_taken_back_and_each_lost_attempt_recorded(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    @app.task(max_attempts=2)
    def interrupted(n: int) -> None: ...

    jobs = [interrupted.delay(n) for n in range(3)]
    lost = _worker(conn)
    taken = _claim(conn, lost, 3)
    assert sorted(taken) == sorted(j.id for j in jobs)
    # The third job is on its last attempt: the rescue ends it FAILED.
    conn.execute("UPDATE pgqueue_jobs SET attempts = 2 WHERE id = %s", (jobs[2].id,))
    conn.execute("UPDATE pgqueue_workers SET heartbeat_at = now() - interval '1 hour'")

    rescued = _rescue(dsn)
    assert sorted((r["id"], r["status"]) for r in rescued) == sorted(
        [(jobs[0].id, "queued"), (jobs[1].id, "queued"), (jobs[2].id, "failed")]
    )
    for job in jobs[:2]:
        row = _row(conn, job.id)
        assert row["status"] == "queued" and row["worker_id"] is None
        [entry] = row["history"]
        assert (entry["attempt"], entry["worker_id"], entry["outcome"]) == (1, lost, "lost")
        assert entry["error"]["type"] == "WorkerLost"
        assert entry["error"] == row["error"]
        assert entry["started_at"] is not None
    failed = _row(conn, jobs[2].id)
    assert (failed["status"], failed["worker_id"], failed["history"]) == ("failed", lost, None)
    assert failed["error"]["type"] == "WorkerLost"

    [past] = _past(conn)
    assert (past["id"], past["name"], past["hostname"], past["pid"]) == (lost, "w", "host", 7)
    assert (past["queues"], past["concurrency"], past["pool"], past["version"]) == (
        ["default"],
        2,
        "thread",
        "9.9",
    )
    assert (past["ended_how"], past["rescued"]) == ("lost", 3)
    assert conn.execute("SELECT count(*) FROM pgqueue_workers").fetchone() == (0,)
    assert _rescue(dsn) == []  # idempotent: nothing recorded twice
    assert len(_past(conn)) == 1


def test_a_lost_worker_without_jobs_is_kept_with_none_rescued(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    lost = _worker(conn, heartbeat_age=3600)
    assert _rescue(dsn) == []
    assert [(p["id"], p["ended_how"], p["rescued"]) for p in _past(conn)] == [(lost, "lost", 0)]


def test_orphaned_jobs_of_a_stopped_worker_are_counted_against_it(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    @app.task
    def left_behind() -> None: ...

    job = left_behind.delay()
    stopped = _worker(conn)
    _claim(conn, stopped)
    # It unregistered (as on a clean exit) with a job still running under it.
    conn.execute(queries.UNREGISTER_WORKER, {"worker_id": stopped})
    assert [(p["id"], p["ended_how"], p["rescued"]) for p in _past(conn)] == [
        (stopped, "stopped", 0)
    ]

    assert [r["id"] for r in _rescue(dsn, orphans=True)] == [job.id]
    assert [(p["id"], p["rescued"]) for p in _past(conn)] == [(stopped, 1)]
    [entry] = _row(conn, job.id)["history"]
    assert (entry["worker_id"], entry["outcome"]) == (stopped, "lost")


def test_a_worker_that_stops_is_kept_among_the_past_workers(
    app: pgqueue.App, conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    worker = start_worker(app, concurrency=3)
    worker_id = worker.worker.presence.worker_id
    assert worker.stop() == 0
    [past] = _past(conn)
    assert (past["id"], past["ended_how"], past["rescued"]) == (worker_id, "stopped", 0)
    assert (past["concurrency"], past["pool"]) == (3, "thread")
    assert past["ended_at"] >= past["heartbeat_at"] >= past["started_at"]
    assert conn.execute("SELECT count(*) FROM pgqueue_workers").fetchone() == (0,)


@pytest.mark.parametrize("retention", [3600.0, 0.0], ids=["retention", "keep-forever"])
def test_past_workers_are_forgotten_after_a_day(
    app: pgqueue.App,
    dsn: str,
    conn: psycopg.Connection[Any],
    start_worker: StartWorker,
    retention: float,
) -> None:
    for age in ("25 hours", "23 hours"):
        worker_id = _worker(conn)
        conn.execute(queries.UNREGISTER_WORKER, {"worker_id": worker_id})
        conn.execute(
            "UPDATE pgqueue_past_workers SET ended_at = now() - %s::interval WHERE id = %s",
            (age, worker_id),
        )

    async def prune() -> int:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as aconn:
            return await prune_past_workers(aconn)

    assert asyncio.run(prune()) == 1
    assert len(_past(conn)) == 1

    # Workers prune on their own, whatever their retention of finished jobs.
    conn.execute("UPDATE pgqueue_past_workers SET ended_at = now() - interval '2 days'")
    start_worker(app, queues=("other",), retention=retention, prune_interval=0.2)
    wait_until(lambda: not _past(conn), what="the worker to prune its past workers")
