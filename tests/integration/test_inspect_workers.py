"""inspect.workers: live workers (the rescue's test of life), the jobs each runs, the workers
that left lately, and the fleet summary (workers alive, schedules overdue)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue._version import __version__
from pgqueue.inspect import workers
from tests.conftest import WorkerThread, wait_until
from tests.integration.inspect_rows import (
    add_job,
    add_past_worker,
    add_schedule,
    add_worker,
    wait_past_restart_grace,
)


@pytest.fixture
def other_session(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as session:
        yield session


def test_a_running_worker_is_listed_with_the_jobs_it_runs(
    app: pgqueue.App,
    conn: psycopg.Connection[Any],
    start_worker: Callable[..., WorkerThread],
) -> None:
    release = threading.Event()

    @app.task
    def hold(n: int) -> int:
        release.wait(30)
        return n

    try:
        thread = start_worker(app, concurrency=3, name="inspected")
        first, second = hold.delay(1), hold.delay(2)

        def running() -> workers.Worker | None:
            fleet = workers.list_workers(conn)
            found = [w for w in fleet.workers if w.name == "inspected"]
            return found[0] if found and len(found[0].running) == 2 else None

        worker = wait_until(running, what="both jobs running on the worker")
    finally:
        release.set()

    assert worker.id == thread.worker.presence.worker_id
    assert worker.alive
    assert worker.concurrency == 3
    assert worker.pool == "thread"
    assert worker.version == __version__
    assert worker.queues == ("default",)
    assert 0 <= worker.heartbeat_age < 15
    assert {(job.id, job.task_name) for job in worker.running} == {
        (first.id, hold.name),
        (second.id, hold.name),
    }
    summary = workers.fleet_summary(conn)
    assert (summary.workers_alive, summary.workers_stale) == (1, 0)


def test_a_worker_is_alive_while_its_session_holds_its_lock(
    conn: psycopg.Connection[Any], other_session: psycopg.Connection[Any]
) -> None:
    add_worker(conn, "locked", heartbeat_ago=20, locked_by=other_session)
    add_worker(conn, "killed", heartbeat_ago=20)  # its session is gone: so is the lock
    add_worker(conn, "frozen", heartbeat_ago=45, locked_by=other_session)  # past the timeout
    wait_past_restart_grace(conn)

    alive = {w.name: w.alive for w in workers.list_workers(conn).workers}

    assert alive == {"locked": True, "killed": False, "frozen": False}
    summary = workers.fleet_summary(conn)
    assert (summary.workers_alive, summary.workers_stale) == (1, 2)


def test_running_jobs_are_matched_to_their_worker(conn: psycopg.Connection[Any]) -> None:
    busy = add_worker(conn, "busy")
    add_worker(conn, "idle")
    job = add_job(conn, "tests.slow", status="running", started_ago=30, worker_id=busy, attempts=1)
    add_job(conn, "tests.waiting")

    found = {w.name: w for w in workers.list_workers(conn).workers}

    assert found["idle"].running == ()
    (running,) = found["busy"].running
    assert (running.id, running.task_name, running.queue) == (job, "tests.slow", "default")
    assert running.running_for is not None and 30 <= running.running_for < 60


def test_past_workers_are_listed_newest_first_up_to_the_limit(
    conn: psycopg.Connection[Any],
) -> None:
    add_past_worker(conn, 101, "old", ended_ago=3600, how="stopped")
    add_past_worker(conn, 102, "lost-one", ended_ago=60, how="lost", rescued=3)
    add_past_worker(conn, 103, "recent", ended_ago=5, how="stopped")

    fleet = workers.list_workers(conn, past_limit=2)

    assert [(p.name, p.ended_how, p.rescued) for p in fleet.past] == [
        ("recent", "stopped", 0),
        ("lost-one", "lost", 3),
    ]
    assert fleet.past[0].queues == ("default",)
    assert fleet.workers == ()


def test_only_enabled_schedules_over_a_minute_late_are_overdue(
    conn: psycopg.Connection[Any],
) -> None:
    add_schedule(conn, "late", due_ago=300)
    add_schedule(conn, "just-due", due_ago=10)  # a scheduler fires it within a second or so
    add_schedule(conn, "disabled", due_ago=300, enabled=False)
    add_schedule(conn, "removed-from-code", due_ago=300, source="code", declared=False)

    summary = workers.fleet_summary(conn)

    (late,) = summary.overdue_schedules
    assert (late.name, late.task_name) == ("late", "tests.periodic_task")
    assert 300 <= late.overdue_seconds < 360
    assert summary.workers_alive == 0
