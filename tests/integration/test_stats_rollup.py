"""The outcome rollup: a worker's attempts land in pgqueue_stats, counted once each, by queue and
outcome, with pickup wait (database clock) and duration histograms; old rows are pruned."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue import rollup
from pgqueue.observations import Observations
from tests.conftest import WorkerThread, wait_until

StartWorker = Callable[..., WorkerThread]


class Flaky(ConnectionError):
    """A retryable failure."""


def _totals(conn: psycopg.Connection[Any]) -> dict[tuple[str, str], int]:
    rows = conn.execute(
        "SELECT queue, outcome, sum(count)::int FROM pgqueue_stats GROUP BY queue, outcome"
    ).fetchall()
    return {(queue, outcome): count for queue, outcome, count in rows}


def _histograms(
    conn: psycopg.Connection[Any], queue: str, outcome: str
) -> tuple[int, list[int], float, list[int], float]:
    """(count, wait buckets, wait sum, duration buckets, duration sum) over every bucket."""
    rows = conn.execute(
        "SELECT count, wait_buckets, wait_sum, duration_buckets, duration_sum FROM pgqueue_stats"
        " WHERE queue = %s AND outcome = %s",
        (queue, outcome),
    ).fetchall()
    size = len(rollup.BOUNDS) + 1
    count, waits, wait_sum, durations, duration_sum = 0, [0] * size, 0.0, [0] * size, 0.0
    for row in rows:
        count += row[0]
        waits = [a + b for a, b in zip(waits, row[1], strict=True)]
        wait_sum += row[2]
        durations = [a + b for a, b in zip(durations, row[3], strict=True)]
        duration_sum += row[4]
    return count, waits, wait_sum, durations, duration_sum


def test_every_attempt_is_counted_once_by_queue_and_outcome(
    app: pgqueue.App, conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    @app.task(queue="alpha")
    def ok() -> None:
        pass

    @app.task(queue="alpha", max_attempts=1)
    def boom() -> None:
        raise ValueError("no")

    @app.task(queue="beta", max_attempts=3, autoretry_for=(Flaky,), retry_backoff=False)
    def flaky() -> None:
        context = pgqueue.current_job()
        assert context is not None
        if context.attempt == 1:
            raise Flaky("first attempt fails")

    @app.task(queue="beta")
    def give_up() -> None:
        raise pgqueue.Cancel("not wanted")

    @app.task(queue="gamma")
    def slow() -> None:
        time.sleep(0.3)  # the work whose duration is measured, not a wait for a condition

    for _ in range(5):
        ok.delay()
    for _ in range(2):
        boom.delay()
    for _ in range(3):
        flaky.delay()
    give_up.delay()
    slow.delay()
    slow.delay()
    # Due 100 s before the worker claims them: their pickup wait, by the database's clock.
    conn.execute(
        "UPDATE pgqueue_jobs SET run_at = now() - interval '100 seconds' WHERE queue = 'gamma'"
    )
    expected = {
        ("alpha", "succeeded"): 5,
        ("alpha", "failed"): 2,
        ("beta", "retried"): 3,
        ("beta", "succeeded"): 3,
        ("beta", "cancelled"): 1,
        ("gamma", "succeeded"): 2,
    }

    worker = start_worker(app, concurrency=4)
    # Written while the worker runs (at most a few seconds after the attempts end) ...
    wait_until(lambda: _totals(conn) == expected, what=f"pgqueue_stats to add up to {expected}")
    # ... and not again at exit.
    assert worker.stop() == 0
    assert _totals(conn) == expected

    count, waits, wait_sum, durations, duration_sum = _histograms(conn, "gamma", "succeeded")
    assert sum(waits) == sum(durations) == count == 2
    waited = rollup.bucket_index(100.0)
    assert waits[waited] == 2, waits  # (60, 300]: due 100 s (and a little) before the claim
    assert 200.0 <= wait_sum < 300.0
    assert sum(durations[rollup.bucket_index(0.3) :]) == 2, durations
    assert 0.6 <= duration_sum < 60.0

    count, waits, _, durations, _ = _histograms(conn, "alpha", "succeeded")
    assert sum(waits) == sum(durations) == count == 5
    assert sum(waits[: rollup.bucket_index(60.0)]) == 5  # enqueued and run within a minute


def test_rows_older_than_25_hours_are_pruned(
    app: pgqueue.App, conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    zeros = [0] * (len(rollup.BOUNDS) + 1)
    for age in ("26 hours", "24 hours"):
        conn.execute(
            "INSERT INTO pgqueue_stats VALUES (now() - %s::interval, 'q', 'succeeded', 1, 0,"
            " %s, 0, %s)",
            (age, zeros, zeros),
        )

    @app.task(queue="q")
    def noop() -> None:
        pass

    start_worker(app)

    def buckets() -> int:
        row = conn.execute("SELECT count(*) FROM pgqueue_stats").fetchone()
        return int(row[0]) if row else -1

    wait_until(lambda: buckets() == 1, what="the 26-hour-old row to be deleted")
    row = conn.execute("SELECT now() - min(bucket) FROM pgqueue_stats").fetchone()
    assert row is not None and row[0].total_seconds() < 25 * 3600


def test_a_failed_write_keeps_the_counts_for_the_next(
    dsn: str, conn: psycopg.Connection[Any]
) -> None:
    observations = Observations()
    observations.attempt_ended("q", "t", "succeeded", 0.01, 0.2)
    observations.attempt_ended("q", "t", "queued", 0.01, 0.2)

    async def scenario() -> None:
        broken = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
        await broken.close()
        with pytest.raises(psycopg.OperationalError):
            await observations.flush(broken)
        assert observations.unwritten == 2
        observations.attempt_ended("q", "t", "succeeded", 0.01, 0.2)
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as good:
            assert await observations.flush(good) == 3
            assert await observations.flush(good) == 0
        assert observations.unwritten == 0

    asyncio.run(scenario())
    assert _totals(conn) == {("q", "succeeded"): 2, ("q", "retried"): 1}
    count, waits, wait_sum, durations, duration_sum = _histograms(conn, "q", "succeeded")
    assert count == 2
    assert waits[rollup.bucket_index(0.01)] == 2
    assert durations[rollup.bucket_index(0.2)] == 2
    assert wait_sum == pytest.approx(0.02)
    assert duration_sum == pytest.approx(0.4)


def test_writes_to_the_same_bucket_add_up(dsn: str, conn: psycopg.Connection[Any]) -> None:
    async def scenario() -> None:
        # One transaction: one now(), so both writes land in the same bucket.
        async with await psycopg.AsyncConnection.connect(dsn) as db, db.transaction():
            for duration in (0.002, 7.0):
                observations = Observations()
                observations.attempt_ended("q", "t", "failed", 0.5, duration)
                await observations.flush(db)

    asyncio.run(scenario())
    rows = conn.execute(
        "SELECT count, duration_buckets, duration_sum FROM pgqueue_stats"
    ).fetchall()
    assert len(rows) == 1
    count, durations, duration_sum = rows[0]
    assert count == 2
    assert durations[rollup.bucket_index(0.002)] == 1
    assert durations[rollup.bucket_index(7.0)] == 1
    assert sum(durations) == 2
    assert duration_sum == pytest.approx(7.002)
