"""A worker runs sync and async tasks and stores what they returned or raised."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

import pgqueue
from pgqueue.execute import UNKNOWN_TASK_PATIENCE
from tests.conftest import WorkerThread, wait_until

StartWorker = Callable[..., WorkerThread]


def _failure(job: pgqueue.Job, timeout: float = 15) -> pgqueue.JobFailed:
    with pytest.raises(pgqueue.JobFailed) as info:
        job.wait(timeout=timeout)
    return info.value


def test_sync_task_result_comes_back_through_wait(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    @app.task
    def add(a: int, b: int) -> dict[str, Any]:
        return {"sum": a + b, "parts": (a, b)}

    start_worker(app)
    job = add.delay(2, b=3)
    assert job.wait(timeout=15) == {"sum": 5, "parts": [2, 3]}
    assert job.status is pgqueue.JobStatus.SUCCEEDED
    assert job.attempts == 1
    assert job.finished_at is not None


def test_async_task_result_comes_back_through_wait(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    @app.task
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    start_worker(app)
    assert double.delay(21).wait(timeout=15) == 42


def test_failing_task_raises_job_failed_with_type_message_and_traceback(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    @app.task
    def explode(n: int) -> None:
        raise ValueError(f"boom {n}")

    start_worker(app)
    job = explode.delay(42)
    failure = _failure(job)
    assert failure.job_id == job.id
    assert failure.status == "failed"
    assert failure.exc_type == "ValueError"
    assert failure.exc_message == "boom 42"
    assert failure.traceback is not None
    assert 'raise ValueError(f"boom {n}")' in failure.traceback
    assert "ValueError: boom 42" in str(failure)
    assert job.status is pgqueue.JobStatus.FAILED


def test_exception_not_in_autoretry_for_fails_on_the_first_attempt(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    calls: list[int] = []

    @app.task(max_attempts=3, autoretry_for=(ConnectionError,))
    def wrong_kind() -> None:
        calls.append(1)
        raise KeyError("not retryable")

    start_worker(app)
    job = wrong_kind.delay()
    assert _failure(job).exc_type == "KeyError"
    assert job.attempts == 1
    assert calls == [1]


def _job_of_a_task_deployed_later(dsn: str, app: pgqueue.App) -> pgqueue.Job:
    """A job of a task that only newer code has (enqueued by it), seen through `app`."""
    newer = pgqueue.App(dsn)
    try:

        @newer.task(name="deployed.later", max_attempts=5)
        def ghost() -> str:
            return "ran"

        job = ghost.delay()
    finally:
        newer.close()
    return app.get_job(job.id)


def _row(conn: psycopg.Connection[Any], job_id: int) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "SELECT status::text AS status, attempts, error, run_at, created_at"
            " FROM pgqueue_all_jobs WHERE id = %s",
            (job_id,),
        ).fetchone()
    assert row is not None
    return row


def test_a_job_of_a_task_this_worker_does_not_know_waits_for_a_worker_that_does(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    # A rolling deploy: the new code enqueues a job of a new task, an old worker claims it.
    job = _job_of_a_task_deployed_later(dsn, app)
    old_worker = start_worker(app)

    def given_back() -> dict[str, Any] | None:
        row = _row(conn, job.id)
        return row if row["status"] == "queued" and row["error"] is not None else None

    row = wait_until(given_back, what="the job given back to the queue")
    assert row["error"]["type"] == "UnknownTask"
    assert "deployed.later" in row["error"]["message"]
    assert row["attempts"] == 0, "the attempt is given back"
    assert row["run_at"] > row["created_at"], "and it waits before the next claim"
    old_worker.stop()

    new_code = pgqueue.App(dsn)
    try:

        @new_code.task(name="deployed.later", max_attempts=5)
        def ghost() -> str:
            return "ran"

        start_worker(new_code)
        assert job.wait(timeout=60) == "ran"
    finally:
        new_code.close()
    assert job.status is pgqueue.JobStatus.SUCCEEDED
    assert job.attempts == 1


def test_a_job_of_an_unknown_task_fails_once_older_than_the_bound(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    job = _job_of_a_task_deployed_later(dsn, app)
    conn.execute(
        "UPDATE pgqueue_jobs SET created_at = now() - %s - interval '1 minute' WHERE id = %s",
        (UNKNOWN_TASK_PATIENCE, job.id),
    )
    start_worker(app)
    failure = _failure(job)
    assert failure.exc_type == "UnknownTask"
    assert "deployed.later" in failure.exc_message
    assert "deploy the code that defines it" in failure.exc_message
    assert job.attempts == 1
    assert job.status is pgqueue.JobStatus.FAILED


@pytest.mark.parametrize("value", [object(), {1: "int key"}, float("nan"), "nul\x00char"])
def test_return_value_that_is_not_json_ends_failed(
    app: pgqueue.App, start_worker: StartWorker, value: Any
) -> None:
    @app.task(max_attempts=3, autoretry_for=(Exception,))
    def returns_junk() -> Any:
        return value

    start_worker(app)
    job = returns_junk.delay()
    failure = _failure(job)
    assert failure.exc_type == "TypeError"
    assert "cannot be stored as JSON" in failure.exc_message
    assert job.attempts == 1
    assert job.result is None


def test_exception_message_with_a_nul_character_still_ends_failed(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    @app.task
    def nul_message() -> None:
        raise RuntimeError("bad\x00byte")

    @app.task
    def fine() -> str:
        return "ok"

    start_worker(app)
    failure = _failure(nul_message.delay())
    assert failure.exc_type == "RuntimeError"
    assert failure.exc_message == "bad\\x00byte"
    # The worker keeps completing other jobs afterwards.
    assert fine.delay().wait(timeout=15) == "ok"


def test_async_task_past_its_timeout_ends_with_task_timeout(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    @app.task(timeout=0.2, max_attempts=1)
    async def hangs() -> None:
        await asyncio.Event().wait()

    start_worker(app)
    failure = _failure(hangs.delay())
    assert failure.exc_type == "pgqueue.execute.TaskTimeout"
    assert "timeout of 0.2 s" in failure.exc_message


def test_sync_task_past_its_timeout_ends_with_task_timeout(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    import threading

    release = threading.Event()

    @app.task(timeout=0.2, max_attempts=1)
    def blocks() -> None:
        release.wait(30)

    start_worker(app)
    try:
        failure = _failure(blocks.delay())
    finally:
        release.set()
    assert failure.exc_type == "pgqueue.execute.TaskTimeout"


@pytest.mark.parametrize("is_async", [False, True])
def test_current_job_inside_a_task_gives_its_id_and_attempt(
    app: pgqueue.App, start_worker: StartWorker, is_async: bool
) -> None:
    def describe() -> dict[str, Any]:
        context = pgqueue.current_job()
        assert context is not None
        return {
            "id": context.id,
            "attempt": context.attempt,
            "max_attempts": context.max_attempts,
            "queue": context.queue,
            "task_name": context.task_name,
        }

    async def describe_async() -> dict[str, Any]:
        return describe()

    task = app.task(name="who.am.i", queue="introspect", max_attempts=4)(
        describe_async if is_async else describe
    )
    start_worker(app)
    job = task.delay()
    assert job.wait(timeout=15) == {
        "id": job.id,
        "attempt": 1,
        "max_attempts": 4,
        "queue": "introspect",
        "task_name": "who.am.i",
    }
    assert pgqueue.current_job() is None
