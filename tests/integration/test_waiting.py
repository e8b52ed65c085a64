"""Job.wait: woken by NOTIFY, bounded by its timeout."""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue import app as app_module
from tests.conftest import WorkerThread, wait_until

StartWorker = Callable[..., WorkerThread]

# The worker's poll and the waiter's safety re-check, pushed past any test's deadline: a test
# that finishes at all was woken by a notification. Its deadline is then only a hang guard,
# and no elapsed time needs to be asserted (a loaded machine can stretch any of them).
NEVER = 3600.0
PATIENCE = 60.0


def test_wait_on_a_job_nobody_runs_raises_timeout_error(app: pgqueue.App) -> None:
    @app.task
    def orphan() -> None: ...

    job = orphan.delay()
    with pytest.raises(TimeoutError, match=f"job {job.id} did not finish within 0.5 s"):
        job.wait(timeout=0.5)

    async def scenario() -> None:
        with pytest.raises(TimeoutError):
            await job.wait_async(timeout=0.5)

    asyncio.run(scenario())
    assert job.refresh().status is pgqueue.JobStatus.QUEUED


def test_wait_on_a_missing_job_raises_job_not_found(app: pgqueue.App) -> None:
    @app.task
    def orphan() -> None: ...

    job = orphan.delay()
    with psycopg.connect(app.dsn, autocommit=True) as conn:
        conn.execute("DELETE FROM pgqueue_jobs")
        conn.execute("DELETE FROM pgqueue_finished_jobs")
    with pytest.raises(pgqueue.JobNotFound):
        job.wait(timeout=5)
    with pytest.raises(pgqueue.JobNotFound):
        app.get_job(job.id)


def _waiter_is_listening(dsn: str) -> bool:
    # Job.wait() LISTENs, checks the row, then sits idle until a notification arrives.
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            """
            SELECT count(*) FROM pg_stat_activity
            WHERE datname = current_database() AND state = 'idle'
              AND query LIKE '%SELECT id FROM pgqueue_jobs WHERE id = ANY%'
            """
        ).fetchone()
    return bool(row and row[0])


def test_wait_is_woken_by_notify_not_by_polling(
    app: pgqueue.App,
    dsn: str,
    start_worker: StartWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Neither the worker's poll nor the waiter's safety re-check could finish this in time:
    # only the notifications (job enqueued, job finished) can.
    monkeypatch.setattr(app_module, "WAIT_RECHECK_SECONDS", NEVER)

    @app.task
    def quick() -> str:
        return "done"

    job = quick.delay()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        waiting: concurrent.futures.Future[Any] = pool.submit(job.wait, NEVER)
        wait_until(lambda: _waiter_is_listening(dsn), what="the waiter to LISTEN")
        assert not waiting.done()
        start_worker(app, poll_interval=NEVER)
        assert waiting.result(timeout=PATIENCE) == "done"


def test_idle_worker_is_woken_by_enqueue_notify(
    app: pgqueue.App, start_worker: StartWorker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(app_module, "WAIT_RECHECK_SECONDS", NEVER)

    @app.task
    def quick(n: int) -> int:
        return n

    start_worker(app, poll_interval=NEVER)
    assert quick.delay(1).wait(timeout=PATIENCE) == 1  # the worker is now idle, never polling
    assert quick.delay(2).wait(timeout=PATIENCE) == 2
