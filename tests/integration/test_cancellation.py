"""job.cancel() on queued and running jobs, and expires= on jobs that never started."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

import pgqueue
from tests.conftest import WorkerThread, wait_until

StartWorker = Callable[..., WorkerThread]


def _status(app: pgqueue.App, job_id: int) -> pgqueue.JobStatus:
    return app.get_job(job_id).status


def test_cancel_a_queued_job_ends_it_at_once_and_it_never_runs(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    ran: list[int] = []

    @app.task
    def work() -> None:
        ran.append(1)

    job = work.delay()
    assert job.cancel("not needed any more") is True
    assert job.status is pgqueue.JobStatus.CANCELLED
    with pytest.raises(pgqueue.JobCancelled) as info:
        job.wait(timeout=5)
    assert (info.value.exc_type, info.value.exc_message) == ("Cancelled", "not needed any more")

    start_worker(app)
    assert work.delay().wait(timeout=15) is None  # the worker runs the next job, not that one
    assert ran == [1]


def test_cancel_a_running_async_job_cancels_it_promptly_without_retry(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    started = threading.Event()

    @app.task(max_attempts=5, autoretry_for=(Exception,))
    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    start_worker(app, poll_interval=30)
    job = forever.delay()
    assert started.wait(15)
    assert job.cancel() is True
    with pytest.raises(pgqueue.JobCancelled) as info:
        job.wait(timeout=10)
    assert "while running" in info.value.exc_message
    assert job.attempts == 1


def test_a_sync_task_sees_the_cancellation_through_its_context(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    started = threading.Event()

    @app.task
    def chunks() -> None:
        context = pgqueue.current_job()
        assert context is not None
        started.set()
        while True:
            context.raise_if_cancelled()
            context.cancel_event.wait(0.05)  # one chunk of work

    start_worker(app)
    job = chunks.delay()
    assert started.wait(15)
    assert job.cancel() is True
    with pytest.raises(pgqueue.JobCancelled):
        job.wait(timeout=10)


def test_a_sync_task_that_ignores_cancellation_keeps_its_own_outcome(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    started, release = threading.Event(), threading.Event()

    @app.task
    def stubborn() -> str:
        started.set()
        release.wait(15)
        return "finished anyway"

    start_worker(app)
    job = stubborn.delay()
    assert started.wait(15)
    assert job.cancel() is True
    release.set()
    assert job.wait(timeout=10) == "finished anyway"


def test_a_missed_cancel_notification_is_caught_by_the_workers_backstop(
    app: pgqueue.App, start_worker: StartWorker, conn: psycopg.Connection[Any]
) -> None:
    started = threading.Event()

    @app.task
    async def forever() -> None:
        started.set()
        await asyncio.Event().wait()

    start_worker(app)
    job = forever.delay()
    assert started.wait(15)
    # What job.cancel() writes, without its NOTIFY: as if the worker was reconnecting.
    conn.execute("UPDATE pgqueue_jobs SET cancel_requested_at = now() WHERE id = %s", (job.id,))
    with pytest.raises(pgqueue.JobCancelled):
        job.wait(timeout=10)


def test_cancel_a_finished_job_changes_nothing(app: pgqueue.App, start_worker: StartWorker) -> None:
    @app.task
    def quick() -> int:
        return 1

    start_worker(app)
    job = quick.delay()
    job.wait(timeout=15)
    assert job.cancel() is False
    assert job.status is pgqueue.JobStatus.SUCCEEDED
    with pytest.raises(pgqueue.JobNotFound):
        app.cancel(10**12)


def test_raise_cancel_inside_a_task_ends_it_cancelled_without_retry(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    @app.task(max_attempts=3, autoretry_for=(Exception,))
    def give_up() -> None:
        raise pgqueue.Cancel("the order was deleted")

    start_worker(app)
    job = give_up.delay()
    with pytest.raises(pgqueue.JobCancelled) as info:
        job.wait(timeout=15)
    assert info.value.exc_message == "the order was deleted"
    assert job.attempts == 1


def _db_now(conn: psycopg.Connection[Any]) -> datetime:
    row = conn.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def test_an_expired_job_is_never_run_and_ends_cancelled(
    app: pgqueue.App, start_worker: StartWorker, conn: psycopg.Connection[Any]
) -> None:
    ran: list[int] = []

    @app.task
    def late() -> None:
        ran.append(1)

    job = late.apply_async(expires=0.2)
    assert job.expires_at is not None
    expires_at = job.expires_at
    wait_until(lambda: _db_now(conn) > expires_at, what="the deadline to pass")
    start_worker(app)
    with pytest.raises(pgqueue.JobCancelled) as info:
        job.wait(timeout=15)
    assert info.value.exc_type == "Expired"
    assert ran == []


def test_a_job_expires_even_in_a_queue_no_worker_serves(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    @app.task(queue="nobody")
    def orphan() -> None: ...

    deadline = datetime.now(timezone.utc) + timedelta(milliseconds=300)
    job = orphan.apply_async(expires=deadline)
    start_worker(app, queues=("other",))
    with pytest.raises(pgqueue.JobCancelled) as info:
        job.wait(timeout=15)
    assert info.value.exc_type == "Expired"


def test_a_job_started_before_its_deadline_runs_to_the_end(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    @app.task
    def fine() -> str:
        return "done"

    start_worker(app)
    assert fine.apply_async(expires=timedelta(minutes=5)).wait(timeout=15) == "done"


@pytest.mark.parametrize(
    ("expires", "error"),
    [
        (-1, pgqueue.ConfigurationError),
        (0, pgqueue.ConfigurationError),
        (float("inf"), pgqueue.ConfigurationError),
        (datetime(2030, 1, 1), pgqueue.ConfigurationError),
        ("soon", TypeError),
    ],
)
def test_bad_expires_is_refused_before_anything_is_written(
    app: pgqueue.App, conn: psycopg.Connection[Any], expires: Any, error: type[Exception]
) -> None:
    @app.task
    def noop() -> None: ...

    with pytest.raises(error, match="expires"):
        noop.apply_async(expires=expires)
    assert conn.execute("SELECT count(*) FROM pgqueue_all_jobs").fetchone() == (0,)


def test_cancel_from_the_command_line(app: pgqueue.App, dsn: str) -> None:
    import subprocess
    import sys

    @app.task
    def noop() -> None: ...

    job = noop.delay()
    result = subprocess.run(
        [sys.executable, "-m", "pgqueue", "jobs", "cancel", str(job.id), "--dsn", dsn],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert f"job {job.id}: cancelled" in result.stdout
    assert _status(app, job.id) is pgqueue.JobStatus.CANCELLED


# -- one decision, whatever commits meanwhile ---------------------------------------------

# What a concurrent worker commits while cancel() waits for the job's row: a claim, a retry
# (or a rescue: the same change) and a completion. Each runs in a transaction of its own that
# holds the row until the test commits it.
CONCURRENT_CHANGES = {
    "claimed": (
        "queued",
        "UPDATE pgqueue_jobs SET status = 'running', attempts = attempts + 1, "
        "started_at = now() WHERE id = %(id)s",
    ),
    "retried": (
        "running",
        "UPDATE pgqueue_jobs SET status = 'queued', worker_id = NULL, started_at = NULL "
        "WHERE id = %(id)s",
    ),
    "finished": (
        "running",
        "WITH ended AS (DELETE FROM pgqueue_jobs WHERE id = %(id)s RETURNING *) "
        "INSERT INTO pgqueue_finished_jobs (id, queue, task_name, args, kwargs, status, "
        "priority, run_at, attempts, max_attempts, created_at, started_at, finished_at) "
        "SELECT id, queue, task_name, args, kwargs, 'succeeded', priority, run_at, attempts, "
        "max_attempts, created_at, started_at, now() FROM ended",
    ),
}


def _waiting_for_a_lock(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND application_name = 'pgqueue' AND wait_event_type = 'Lock'"
    ).fetchone()
    return bool(row and row[0])


@pytest.mark.parametrize("flavour", ["sync", "async"])
@pytest.mark.parametrize("change", list(CONCURRENT_CHANGES))
def test_cancel_decides_on_the_status_committed_while_it_waited(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any], change: str, flavour: str
) -> None:
    @app.task
    def work() -> None: ...

    before, statement = CONCURRENT_CHANGES[change]
    job = work.delay()
    conn.execute("UPDATE pgqueue_jobs SET status = %s WHERE id = %s", (before, job.id))
    outcome: list[bool | BaseException] = []

    def cancel() -> None:
        try:
            if flavour == "sync":
                outcome.append(app.cancel(job.id, "changed my mind"))
            else:
                outcome.append(asyncio.run(app.acancel(job.id, "changed my mind")))
        except BaseException as exc:
            outcome.append(exc)

    with psycopg.connect(dsn) as worker:
        worker.execute(statement, {"id": job.id})
        canceller = threading.Thread(target=cancel)
        canceller.start()
        wait_until(lambda: _waiting_for_a_lock(conn), what="cancel() to wait for the row")
        worker.commit()
    canceller.join(15)
    after = app.get_job(job.id)
    if change == "finished":
        assert outcome == [False]
        assert after.status is pgqueue.JobStatus.SUCCEEDED
    elif change == "claimed":
        assert outcome == [True]
        assert after.status is pgqueue.JobStatus.RUNNING
        assert after.cancel_requested_at is not None
    else:  # back in the queue: it must never run again
        assert outcome == [True]
        assert after.status is pgqueue.JobStatus.CANCELLED
        assert after.error is not None and after.error["message"] == "changed my mind"
