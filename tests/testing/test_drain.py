"""drain(): due jobs run in the test's process, through the database, retries and follow-ups
included; what ran comes back in order."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue.testing import DrainLimitReached, adrain, drain


def _status(conn: psycopg.Connection[Any], job_id: int) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT status::text, attempts, result FROM pgqueue_all_jobs WHERE id = %s", (job_id,)
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_drain_runs_sync_and_async_jobs_here_and_stores_their_outcomes(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    threads: list[threading.Thread] = []

    @app.task
    def pair(a: int, b: int) -> tuple[int, int]:
        threads.append(threading.current_thread())
        return (a, b)

    @app.task
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    first = pair.delay(1, 2)
    second = double.delay(x=21)
    ran = drain(app)

    assert [(r.id, r.status, r.result) for r in ran] == [
        (first.id, "succeeded", [1, 2]),  # through JSON, as with a worker: a tuple is a list
        (second.id, "succeeded", 42),
    ]
    assert threads == [threading.current_thread()]
    assert _status(conn, first.id) == ("succeeded", 1, [1, 2])
    assert first.wait(timeout=5) == [1, 2]
    assert drain(app) == []


def test_jobs_enqueued_by_jobs_run_in_the_next_rounds(app: pgqueue.App) -> None:
    @app.task
    def countdown(n: int) -> int:
        if n > 0:
            countdown.delay(n - 1)
        return n

    @app.task
    async def acountdown(n: int) -> int:
        if n > 0:
            await acountdown.adelay(n - 1)
        return n

    countdown.delay(3)
    acountdown.delay(2)
    ran = drain(app)
    assert [(r.task_name.rsplit(".", 1)[1], r.result) for r in ran] == [
        ("countdown", 3),
        ("acountdown", 2),
        ("countdown", 2),
        ("acountdown", 1),
        ("countdown", 1),
        ("acountdown", 0),
        ("countdown", 0),
    ]


def test_retries_run_at_once_by_default_with_the_tasks_policy(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    @app.task(max_attempts=3, autoretry_for=(ConnectionError,), retry_backoff=3600)
    def flaky(succeed_on: int) -> int:
        job = pgqueue.current_job()
        assert job is not None
        if job.attempt < succeed_on:
            raise ConnectionError(f"attempt {job.attempt}")
        return job.attempt

    @app.task(max_attempts=5)
    def broken() -> None:
        raise ValueError("not retryable")

    recovers = flaky.delay(3)
    gives_up = flaky.delay(4)
    fails = broken.delay()
    ran = drain(app)

    by_job = {
        job.id: [(r.attempt, r.status) for r in ran if r.id == job.id]
        for job in (recovers, gives_up, fails)
    }
    assert by_job[recovers.id] == [(1, "queued"), (2, "queued"), (3, "succeeded")]
    assert by_job[gives_up.id] == [(1, "queued"), (2, "queued"), (3, "failed")]
    assert by_job[fails.id] == [(1, "failed")]
    failure = next(r for r in ran if r.id == fails.id)
    assert failure.error is not None and failure.error["type"] == "ValueError"
    assert "not retryable" in failure.error["traceback"]
    assert _status(conn, recovers.id) == ("succeeded", 3, 3)
    assert _status(conn, gives_up.id)[:2] == ("failed", 3)


def test_with_retry_now_off_drain_waits_for_a_backoff_within_max_wait(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    @app.task(max_attempts=3)
    def later(countdown: float) -> int:
        job = pgqueue.current_job()
        assert job is not None
        if job.attempt == 1:
            raise pgqueue.Retry(countdown=countdown)
        return job.attempt

    soon = later.delay(0.3)
    far = later.delay(3600)
    ran = drain(app, retry_now=False, max_wait=5)

    assert [(r.id, r.status) for r in ran] == [
        (soon.id, "queued"),
        (far.id, "queued"),
        (soon.id, "succeeded"),
    ]
    assert _status(conn, far.id)[:2] == ("queued", 1)  # due in an hour: left queued


def test_only_committed_and_due_jobs_run(app: pgqueue.App, dsn: str) -> None:
    @app.task
    def noop(tag: str) -> str:
        return tag

    noop.apply_async(args=("later",), countdown=3600)
    with psycopg.connect(dsn) as caller:
        noop.apply_async(args=("in a transaction",), connection=caller)
        assert drain(app) == []  # not committed yet: no worker could see it either
        caller.commit()
    assert [r.result for r in drain(app)] == ["in a transaction"]


def test_queues_limits_what_is_drained(app: pgqueue.App) -> None:
    @app.task(queue="mail")
    def mail() -> str:
        return "mail"

    @app.task
    def other() -> str:
        return "other"

    mail.delay()
    other.delay()
    other.apply_async(queue="mail")
    assert sorted(r.result for r in drain(app, queues=["mail"])) == ["mail", "other"]
    assert [r.result for r in drain(app)] == ["other"]


def test_a_task_that_enqueues_itself_stops_at_the_round_limit(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    @app.task
    def forever() -> None:
        forever.delay()

    forever.delay()
    with pytest.raises(DrainLimitReached, match=r"ran 5 rounds .*forever.*max_rounds="):
        drain(app, max_rounds=5)
    # The job claimed past the limit was given back, not left running.
    rows = conn.execute("SELECT status::text, attempts FROM pgqueue_jobs").fetchall()
    assert rows == [("queued", 0)]


def test_a_transactional_task_commits_its_writes_with_its_success(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    conn.execute("CREATE TABLE charges (order_id int)")

    @app.task(transactional=True, max_attempts=2, autoretry_for=(RuntimeError,))
    def charge(order_id: int) -> int:
        job = pgqueue.current_job()
        assert job is not None
        job.connection.execute("INSERT INTO charges VALUES (%s)", (order_id,))
        if job.attempt == 1:
            raise RuntimeError("rolled back")
        return job.attempt

    job = charge.delay(7)
    assert [r.status for r in drain(app)] == ["queued", "succeeded"]
    assert conn.execute("SELECT order_id FROM charges").fetchall() == [(7,)]
    assert _status(conn, job.id) == ("succeeded", 2, 2)


def test_adrain_runs_async_tasks_on_the_callers_event_loop(app: pgqueue.App) -> None:
    loops: list[asyncio.AbstractEventLoop] = []

    @app.task
    async def where() -> str:
        loops.append(asyncio.get_running_loop())
        return "here"

    @app.task
    def plain() -> str:
        return "plain"

    async def main() -> list[Any]:
        await where.adelay()
        await plain.adelay()
        ran = await adrain(app)
        assert loops == [asyncio.get_running_loop()]
        await app.aclose()
        return [r.result for r in ran]

    assert asyncio.run(main()) == ["here", "plain"]


def test_max_rounds_must_be_positive(app: pgqueue.App) -> None:
    with pytest.raises(ValueError, match="max_rounds"):
        drain(app, max_rounds=0)


def test_drain_on_a_database_without_the_schema_says_so(empty_dsn: str) -> None:
    app = pgqueue.App(empty_dsn)
    with pytest.raises(pgqueue.SchemaNotMigrated, match="pgqueue migrate"):
        drain(app)


def test_expired_jobs_end_cancelled_without_running(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    calls: list[str] = []

    @app.task
    def note(tag: str) -> None:
        calls.append(tag)

    stale = note.apply_async(args=("stale",), expires=3600)
    note.delay("fresh")
    conn.execute(
        "UPDATE pgqueue_jobs SET expires_at = now() - interval '1 second' WHERE id = %s",
        (stale.id,),
    )
    assert [r.args for r in drain(app)] == [["fresh"]]
    assert calls == ["fresh"]
    assert _status(conn, stale.id)[0] == "cancelled"


def test_a_job_of_a_task_the_app_lacks_goes_back_as_with_a_worker(app: pgqueue.App) -> None:
    elsewhere = pgqueue.App(app.dsn)

    @elsewhere.task
    def unknown() -> None: ...

    unknown.delay()
    for retry_now in (True, False):
        [ran] = drain(app, retry_now=retry_now)
        assert ran.retried and ran.error is not None and ran.error["type"] == "UnknownTask"
        with psycopg.connect(app.dsn, autocommit=True) as conn:
            conn.execute("UPDATE pgqueue_jobs SET run_at = now()")  # due again, for the loop
    elsewhere.close()
