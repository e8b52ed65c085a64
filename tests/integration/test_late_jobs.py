"""Jobs that sort before where a worker's claims have got to are still picked up at once.

A worker reads each queue on from where its last claim stopped (see CLAIM_JOBS). A job
committed late (its run_at is its transaction's start), a countdown job that came due while
its transaction was open, a job of another priority: each sorts before that position, or
outside its priority. The enqueue's notification says where the job sorts, and the worker
reads from there. These tests switch off the once-a-second read from the start of each
queue, so that only the notification can lead the worker to such a job.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

import pgqueue
import pgqueue.worker
from tests.conftest import WorkerThread, wait_until

StartWorker = Callable[..., WorkerThread]


@pytest.fixture(autouse=True)
def no_full_reads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A worker never reads a queue from its start once it has a position there."""
    monkeypatch.setattr(pgqueue.worker, "FULL_CLAIM_INTERVAL", float("inf"))
    yield


def _finished(app: pgqueue.App, job: pgqueue.Job) -> bool:
    return app.get_job(job.id).status.value == "succeeded"


def _claim_past(app: pgqueue.App, task: Any, **options: Any) -> None:
    """Enqueue a job (committed at once) and wait until the worker has run it: the worker's
    position in its queue is now that job."""
    newer = task.apply_async(**options)
    wait_until(lambda: _finished(app, newer), what="the newer job to run")


def test_a_job_committed_after_newer_jobs_were_claimed_is_picked_up(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    @app.task
    def noop() -> None: ...

    start_worker(app, concurrency=4)
    with psycopg.connect(app.dsn) as tx:  # the application's transaction
        late = noop.apply_async(connection=tx)  # run_at: this transaction's start
        _claim_past(app, noop)
        tx.commit()
        wait_until(lambda: _finished(app, late), what="the late job to run")


def test_jobs_committed_late_in_bulk_are_picked_up(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    @app.task
    def noop() -> None: ...

    start_worker(app, concurrency=4)
    with psycopg.connect(app.dsn) as tx:
        ids = noop.delay_many([() for _ in range(5)], connection=tx)
        _claim_past(app, noop)
        tx.commit()
    jobs = [app.get_job(job_id) for job_id in ids]
    wait_until(lambda: all(_finished(app, job) for job in jobs), what="the late jobs to run")


def test_a_countdown_job_that_came_due_before_its_commit_is_picked_up(
    app: pgqueue.App, start_worker: StartWorker, conn: psycopg.Connection[Any]
) -> None:
    @app.task
    def noop() -> None: ...

    start_worker(app, concurrency=4)
    with psycopg.connect(app.dsn) as tx:
        late = noop.apply_async(countdown=0.2, connection=tx)
        assert late.run_at is not None
        # A newer job, due after the countdown job, is claimed while its transaction is open.
        wait_until(
            lambda: conn.execute("SELECT now() > %s", (late.run_at,)).fetchone() == (True,),
            what="the countdown to pass",
        )
        _claim_past(app, noop)
        tx.commit()
        wait_until(lambda: _finished(app, late), what="the countdown job to run")


@pytest.mark.parametrize("priority", [5, -5])
def test_a_job_of_another_priority_than_the_last_claimed_is_picked_up(
    app: pgqueue.App, start_worker: StartWorker, priority: int
) -> None:
    @app.task
    def noop() -> None: ...

    start_worker(app, concurrency=4)
    _claim_past(app, noop)  # the worker's position is in priority 0
    other = noop.apply_async(priority=priority)
    wait_until(lambda: _finished(app, other), what=f"the job of priority {priority} to run")


def _hold_as_running(conn: psycopg.Connection[Any], job: pgqueue.Job, worker_id: int) -> None:
    """Move a queued job (of a queue no worker serves) to the served queue, running under
    `worker_id` since a minute ago, under a lease drawn as a claim draws it: its run_at is
    before the worker's position there."""
    conn.execute(
        "UPDATE pgqueue_jobs SET status = 'running', attempts = 1, worker_id = %s,"
        " queue = 'default', started_at = now() - interval '1 minute',"
        " lease = nextval('pgqueue_job_lease_seq') WHERE id = %s",
        (worker_id, job.id),
    )


def test_a_rescued_job_keeping_its_run_at_is_picked_up(
    app: pgqueue.App, start_worker: StartWorker, conn: psycopg.Connection[Any]
) -> None:
    @app.task(max_attempts=3)
    def noop() -> None: ...

    stranded = noop.apply_async(queue="nowhere")
    start_worker(app, concurrency=4, queues=("default",), rescue_interval=0.1)
    _claim_past(app, noop)
    lost = conn.execute(
        "INSERT INTO pgqueue_workers (name, hostname, pid, queues, concurrency, heartbeat_at)"
        " VALUES ('gone', 'nowhere', 1, '{default}', 1, now() - interval '1 hour') RETURNING id"
    ).fetchone()
    assert lost is not None
    _hold_as_running(conn, stranded, int(lost[0]))
    wait_until(lambda: _finished(app, stranded), what="the rescued job to run")


def test_a_job_given_back_unstarted_is_picked_up(
    app: pgqueue.App,
    start_worker: StartWorker,
    conn: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A claim whose reply was lost is given back by the worker that made it (as unstarted
    jobs are at shutdown), keeping its run_at."""
    monkeypatch.setattr(pgqueue.worker, "STRAY_AGE", 0.0)
    monkeypatch.setattr(pgqueue.worker, "STRAY_CHECK_INTERVAL", 0.1)

    @app.task
    def noop() -> None: ...

    stranded = noop.apply_async(queue="nowhere")
    worker = start_worker(app, concurrency=4, queues=("default",))
    _claim_past(app, noop)
    worker_id = worker.worker.presence.worker_id
    assert worker_id is not None
    _hold_as_running(conn, stranded, worker_id)
    wait_until(lambda: _finished(app, stranded), what="the job given back to run")
