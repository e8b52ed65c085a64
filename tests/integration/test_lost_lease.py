"""A worker that learns it was declared lost stops the attempts whose jobs were rescued from it,
says so, writes nothing for them, and goes on under a new registration; jobs that were not
rescued stay its own."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue import queries
from tests.conftest import wait_until

CONCURRENCY = 4


def _declare_lost(conn: psycopg.Connection[Any], worker_id: int) -> bool:
    """What the fleet's rescuer does to a worker whose heartbeat stopped; True once the worker
    is gone (its own heartbeat may land between the two statements: then try again)."""
    conn.execute(
        "UPDATE pgqueue_workers SET heartbeat_at = now() - interval '1 hour' WHERE id = %s",
        (worker_id,),
    )
    conn.execute(queries.RESCUE_LOST_JOBS, {"lock_grace": 60.0, "heartbeat_timeout": 60.0})
    gone = conn.execute("SELECT 1 FROM pgqueue_workers WHERE id = %s", (worker_id,)).fetchone()
    return gone is None


def test_a_worker_declared_lost_stops_the_attempts_it_can_no_longer_finish(
    app: pgqueue.App,
    conn: psycopg.Connection[Any],
    start_worker: Callable[..., Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    async_started, async_cancelled = threading.Event(), threading.Event()
    sync_started, sync_saw_flag = threading.Event(), threading.Event()

    @app.task(max_attempts=1)
    async def long_async() -> None:
        async_started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            async_cancelled.set()
            raise

    @app.task(max_attempts=1)
    def long_sync() -> str:
        sync_started.set()
        context = pgqueue.current_job()
        assert context is not None
        deadline = time.monotonic() + 30
        while not context.cancel_requested and time.monotonic() < deadline:
            time.sleep(0.01)  # the task's own work, checking its flag between steps
        if context.cancel_requested:
            sync_saw_flag.set()
        return "finished anyway"

    @app.task
    def quick() -> str:
        return "ok"

    caplog.set_level(logging.INFO, logger="pgqueue.worker")
    worker = start_worker(app, concurrency=CONCURRENCY, heartbeat_interval=0.2)
    old_id = worker.worker.presence.worker_id
    jobs = [long_async.delay(), long_sync.delay()]
    assert async_started.wait(15) and sync_started.wait(15)

    wait_until(lambda: _declare_lost(conn, old_id), what="the worker to be declared lost")
    # Rescued with no attempts left: both jobs ended FAILED ("worker lost") in the database.
    for job in jobs:
        assert job.refresh().status is pgqueue.JobStatus.FAILED

    assert async_cancelled.wait(15), "the async attempt was not cancelled"
    assert sync_saw_flag.wait(15), "the sync attempt's cancel flag was not set"
    wait_until(lambda: worker.worker.free_slots() == CONCURRENCY, what="both slots free")
    wait_until(lambda: worker.worker.completer.backlog == 0, what="outcomes flushed")

    new_id = worker.worker.presence.worker_id
    assert new_id != old_id
    assert conn.execute("SELECT id FROM pgqueue_workers").fetchall() == [(new_id,)]
    assert quick.delay().wait(timeout=15) == "ok"  # it goes on claiming, under its new id

    for job in jobs:
        assert job.refresh().error is not None and job.error["type"] == "WorkerLost"
    log = caplog.text
    assert f"now runs as id {new_id} (id {old_id} is gone)" in log
    assert f"job {jobs[0].id} {long_async.name} attempt 1/1: cancelled; its lease was lost" in log
    assert f"job {jobs[1].id} {long_sync.name} attempt 1/1: asked to stop" in log
    # Nothing was sent for the old attempts: no outcome refused by fencing, none logged.
    assert "outcome" not in log and "finished anyway" not in log


def test_a_worker_whose_row_vanished_keeps_the_jobs_nobody_rescued(
    app: pgqueue.App,
    conn: psycopg.Connection[Any],
    start_worker: Callable[..., Any],
) -> None:
    """Its row deleted (by hand, or the server still held its old session): its jobs were not
    taken back, so the worker takes them over under its new id and finishes them."""
    release = threading.Event()

    @app.task
    def waits() -> str:
        release.wait(30)
        return "done"

    worker = start_worker(app, concurrency=2, heartbeat_interval=0.2)
    old_id = worker.worker.presence.worker_id
    job = waits.delay()
    wait_until(lambda: job.refresh().status is pgqueue.JobStatus.RUNNING, what="job running")
    conn.execute("DELETE FROM pgqueue_workers WHERE id = %s", (old_id,))
    wait_until(lambda: worker.worker.presence.worker_id != old_id, what="a new registration")
    new_id = worker.worker.presence.worker_id
    # Taken over under the new id (out of the orphan check's reach) once the new row commits.
    wait_until(
        lambda: (
            conn.execute("SELECT worker_id FROM pgqueue_jobs WHERE id = %s", (job.id,)).fetchone()
            == (new_id,)
        ),
        what="the job to be taken over",
    )
    release.set()
    assert job.wait(timeout=15) == "done"
