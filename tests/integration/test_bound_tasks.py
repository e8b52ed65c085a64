"""`@app.task(bind=True)` in a real worker: the request it sees, and retrying itself."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

import pgqueue
from tests.conftest import WorkerThread
from tests.integration import process_app

StartWorker = Callable[..., WorkerThread]


def test_a_bound_sync_task_retries_itself_and_sees_its_request(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    seen: list[tuple[Any, ...]] = []

    @app.task(bind=True, max_attempts=3, queue="bound")
    def fetch(self: pgqueue.Task[..., int], url: str, *, tries: int) -> int:
        request = self.request
        seen.append((request.id, request.retries, request.attempt, request.args, request.kwargs))
        assert request.queue == "bound" and request.task == self.name
        if request.retries < tries:
            self.retry(exc=TimeoutError(f"slow {url}"), countdown=0)
        return request.retries

    start_worker(app)
    job = fetch.delay("http://x", tries=2)
    assert job.wait(timeout=30) == 2
    assert seen == [(job.id, n, n + 1, ["http://x"], {"tries": 2}) for n in range(3)]


def test_a_bound_async_task_retries_itself_until_its_attempts_run_out(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    @app.task(bind=True, max_attempts=2)
    async def never(self: pgqueue.Task[..., None]) -> None:
        self.retry(exc=ConnectionError("down"), countdown=0)

    start_worker(app)
    job = never.delay()
    with pytest.raises(pgqueue.JobFailed) as info:
        job.wait(timeout=30)
    assert info.value.exc_type == "Retry"
    assert "ConnectionError: down" in info.value.exc_message
    assert "attempt 2 of 2 was the last" in info.value.exc_message


def test_max_retries_gives_up_sooner_than_max_attempts(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    @app.task(bind=True, max_attempts=10, autoretry_for=(Exception,), retry_backoff=False)
    def impatient(self: pgqueue.Task[..., None]) -> None:
        self.retry(exc=ValueError("no"), countdown=0, max_retries=1)

    start_worker(app)
    job = impatient.delay()
    with pytest.raises(pgqueue.JobFailed) as info:
        job.wait(timeout=30)
    assert info.value.exc_type == "pgqueue.errors.MaxRetriesExceeded"
    assert job.refresh().attempts == 2


@pytest.fixture
def pool_app(dsn: str, conn: psycopg.Connection[Any]) -> Iterator[pgqueue.App]:
    conn.execute("CREATE TABLE pool_events (job_id bigint, attempt int, pid int, what text)")
    process_app.app.set_dsn(dsn)
    yield process_app.app
    process_app.app.close()


def test_a_bound_task_retries_itself_in_the_process_pool(
    pool_app: pgqueue.App, start_worker: StartWorker
) -> None:
    start_worker(
        pool_app,
        pool="process",
        app_path="tests.integration.process_app:app",
        concurrency=1,
    )
    job = process_app.bound_retries.delay()
    job_id, retries, pid = job.wait(timeout=60)
    assert (job_id, retries) == (job.id, 2)
    assert pid != os.getpid()


def test_drain_runs_a_bound_tasks_retries_in_the_tests_process(app: pgqueue.App) -> None:
    from pgqueue.testing import drain

    @app.task(bind=True, max_attempts=3)
    def patient(self: pgqueue.Task[..., int]) -> int:
        if self.request.retries < 1:
            self.retry(countdown=3600)  # drain(retry_now=True) does not wait for it
        return self.request.attempt

    job = patient.delay()
    ran = drain(app)
    assert [(r.id, r.attempt, r.status) for r in ran] == [
        (job.id, 1, "queued"),
        (job.id, 2, "succeeded"),
    ]
    assert ran[-1].result == 2
