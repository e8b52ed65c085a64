"""Transactional tasks: the task's writes and its job's SUCCEEDED commit together, or neither."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import pgqueue
from tests.conftest import WorkerThread, wait_until

StartWorker = Callable[..., WorkerThread]


@pytest.fixture
def charges(conn: psycopg.Connection[Any]) -> Callable[[], list[tuple[int, int]]]:
    conn.execute("CREATE TABLE charges (order_id int, attempt int)")
    return lambda: conn.execute("SELECT order_id, attempt FROM charges ORDER BY 2").fetchall()


def _charge(order_id: int) -> int:
    job = pgqueue.current_job()
    assert job is not None
    job.connection.execute(
        "INSERT INTO charges (order_id, attempt) VALUES (%s, %s)", (order_id, job.attempt)
    )
    return job.attempt


def test_the_charge_and_the_jobs_success_commit_together(
    app: pgqueue.App, start_worker: StartWorker, charges: Callable[[], list[Any]]
) -> None:
    @app.task(transactional=True)
    def charge(order_id: int) -> int:
        return _charge(order_id)

    start_worker(app)
    job = charge.delay(7)
    assert job.wait(timeout=15) == 1
    assert charges() == [(7, 1)]


def test_a_failed_attempt_rolls_its_writes_back_and_the_retry_charges_once(
    app: pgqueue.App, start_worker: StartWorker, charges: Callable[[], list[Any]]
) -> None:
    @app.task(
        transactional=True, max_attempts=3, autoretry_for=(ConnectionError,), retry_backoff=False
    )
    def charge(order_id: int) -> int:
        attempt = _charge(order_id)
        if attempt == 1:
            raise ConnectionError("the payment gateway timed out after we wrote")
        return attempt

    start_worker(app)
    assert charge.delay(8).wait(timeout=15) == 2
    assert charges() == [(8, 2)]


def test_async_transactional_task(
    app: pgqueue.App, start_worker: StartWorker, charges: Callable[[], list[Any]]
) -> None:
    @app.task(transactional=True)
    async def charge(order_id: int) -> int:
        job = pgqueue.current_job()
        assert job is not None
        await job.connection.execute(
            "INSERT INTO charges (order_id, attempt) VALUES (%s, %s)", (order_id, job.attempt)
        )
        return job.attempt

    start_worker(app)
    assert charge.delay(9).wait(timeout=15) == 1
    assert charges() == [(9, 1)]


def test_an_attempt_whose_job_connection_was_cut_is_retried_and_charges_once(
    app: pgqueue.App, start_worker: StartWorker, charges: Callable[[], list[Any]]
) -> None:
    @app.task(transactional=True, retry_backoff=False)  # nothing in autoretry_for
    def charge(order_id: int) -> int:
        attempt = _charge(order_id)
        if attempt == 1:  # the server ends the job's connection after the write
            job = pgqueue.current_job()
            assert job is not None
            job.connection.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        return attempt

    start_worker(app)
    job = charge.delay(11)
    assert job.wait(timeout=15) == 2
    assert charges() == [(11, 2)]


def test_an_async_attempt_whose_job_connection_was_cut_is_retried(
    app: pgqueue.App, start_worker: StartWorker, charges: Callable[[], list[Any]]
) -> None:
    @app.task(transactional=True, retry_backoff=False)
    async def charge(order_id: int) -> int:
        job = pgqueue.current_job()
        assert job is not None
        await job.connection.execute(
            "INSERT INTO charges (order_id, attempt) VALUES (%s, %s)", (order_id, job.attempt)
        )
        if job.attempt == 1:
            await job.connection.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        return job.attempt

    start_worker(app)
    assert charge.delay(12).wait(timeout=15) == 2
    assert charges() == [(12, 2)]


def test_a_cut_job_connection_on_the_last_attempt_ends_failed_and_says_why(
    app: pgqueue.App, start_worker: StartWorker, charges: Callable[[], list[Any]]
) -> None:
    @app.task(transactional=True, max_attempts=1)
    def charge(order_id: int) -> int:
        attempt = _charge(order_id)
        job = pgqueue.current_job()
        assert job is not None
        job.connection.execute("SELECT pg_terminate_backend(pg_backend_pid())")
        return attempt

    start_worker(app)
    with pytest.raises(pgqueue.JobFailed) as failed:
        charge.delay(13).wait(timeout=15)
    assert failed.value.exc_type == "pgqueue.transactional.JobConnectionLost"
    assert "connection" in failed.value.exc_message
    assert charges() == []


def test_a_task_that_lost_its_lease_leaves_no_write_behind(
    app: pgqueue.App,
    start_worker: StartWorker,
    charges: Callable[[], list[Any]],
    conn: psycopg.Connection[Any],
) -> None:
    wrote, release = threading.Event(), threading.Event()

    @app.task(transactional=True)
    def charge(order_id: int) -> int:
        attempt = _charge(order_id)
        wrote.set()
        release.wait(15)
        return attempt

    worker = start_worker(app)
    job = charge.delay(10)
    assert wrote.wait(15)
    # Meanwhile the job was rescued and claimed again elsewhere (attempt 2 holds the lease).
    conn.execute(
        "UPDATE pgqueue_jobs SET attempts = 2, lease = nextval('pgqueue_job_lease_seq')"
        " WHERE id = %s",
        (job.id,),
    )
    release.set()
    # The connection goes back to the worker's pool only once its transaction has ended.
    pool = worker.worker.executor.transactional
    wait_until(lambda: pool._idle, what="the task's transaction to end")
    assert charges() == []
    row = app.get_job(job.id)
    assert (row.status, row.attempts) == (pgqueue.JobStatus.RUNNING, 2)


def test_the_job_connection_is_only_for_transactional_tasks(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    @app.task
    def plain() -> None:
        job = pgqueue.current_job()
        assert job is not None
        job.connection.execute("SELECT 1")

    start_worker(app)
    with pytest.raises(pgqueue.JobFailed) as info:
        plain.delay().wait(timeout=15)
    assert "transactional=True" in info.value.exc_message
