"""Cancellation, expiry and time limits in real worker processes.

A cancelled queued job never runs; a cancelled running async job is stopped at its await and
ends CANCELLED; a job whose `expires=` passes while no worker runs ends CANCELLED (Expired) once
one starts. An async task past its `timeout=` is cancelled; a sync task on a thread past it has
its attempt ended as timed out, and the thread's late result is discarded.

No test here holds a duration to an upper limit, which a loaded machine could break: each
checks what happened instead (the task could not have ended by itself; the attempt failed as
timed out while its thread was still blocked). The figures they print are for reading only.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import pgqueue
from tests.acceptance import apps
from tests.acceptance.conftest import SpawnWorker
from tests.acceptance.helpers import (
    enqueue,
    executions,
    job_row,
    set_flag,
    stop_gracefully,
    wait_for_status,
    wait_started,
)
from tests.conftest import wait_until

TIMEOUT_MESSAGE = "attempt ran past the task's timeout of 0.5 s"


def is_timeout(error: dict[str, Any]) -> bool:
    """A TaskTimeout failure (its type is stored with its module, e.g. pgqueue.execute)."""
    return error["type"].rpartition(".")[2] == "TaskTimeout" and error["message"] == (
        TIMEOUT_MESSAGE
    )


@pytest.fixture
def client(dsn: str) -> Iterator[pgqueue.App]:
    """The application side: an App on the test's database, as user code holds one."""
    application = pgqueue.App(dsn)
    yield application
    application.close()


def test_cancelled_queued_job_never_runs(
    db: psycopg.Connection[Any], spawn_worker: SpawnWorker, client: pgqueue.App
) -> None:
    job = enqueue(db, apps.record, 1)
    assert client.cancel(job, "not needed any more") is True
    cancelled = job_row(db, job)
    assert cancelled["status"] == "cancelled"
    assert cancelled["error"]["type"] == "Cancelled"
    assert cancelled["error"]["message"] == "not needed any more"

    worker = spawn_worker()
    marker = enqueue(db, apps.record, 2)  # once it has run, the worker has looked at the queue
    wait_for_status(db, marker, "succeeded")
    assert executions(db, job) == []
    assert (job_row(db, job)["status"], job_row(db, job)["attempts"]) == ("cancelled", 0)
    assert not worker.log_lines(f"job {job} ")
    assert stop_gracefully(worker) == 0


def test_cancelled_running_async_job_is_stopped_at_its_await_and_ends_cancelled(
    db: psycopg.Connection[Any], spawn_worker: SpawnWorker, client: pgqueue.App
) -> None:
    worker = spawn_worker()
    job = enqueue(db, apps.ablock, "never-set")  # it can only end by being cancelled
    wait_started(db, job)

    asked_at = time.monotonic()
    assert client.cancel(job) is True
    cancelled = wait_for_status(db, job, "cancelled", timeout=60)
    print(f"running async job cancelled {time.monotonic() - asked_at:.2f}s after the request")
    assert cancelled["attempts"] == 1, "cancelled, not retried"
    assert cancelled["error"]["type"] == "Cancelled"
    assert cancelled["error"]["message"] == "cancelled on request while running"
    assert worker.log_lines(f"job {job}: cancellation requested")
    assert executions(db, job) == [(1, worker.pid)]

    later = enqueue(db, apps.record, 3)  # the worker carries on
    assert wait_for_status(db, later, "succeeded")["result"] == 3
    assert stop_gracefully(worker) == 0


def test_job_expiring_while_no_worker_runs_ends_cancelled_as_expired(
    db: psycopg.Connection[Any], spawn_worker: SpawnWorker
) -> None:
    job = apps.record.apply_async(args=(1,), connection=db, expires=0.5).id

    def past_its_deadline() -> bool:
        row = db.execute(
            "SELECT expires_at <= now() FROM pgqueue_all_jobs WHERE id = %s", (job,)
        ).fetchone()
        return bool(row and row[0])

    wait_until(past_its_deadline, timeout=10, interval=0.05, what="the job's deadline")
    assert job_row(db, job)["status"] == "queued", "nothing expires it while no worker runs"

    worker = spawn_worker()
    expired = wait_for_status(db, job, "cancelled")
    assert expired["error"]["type"] == "Expired"
    assert expired["error"]["message"].startswith("not started before it expired at ")
    assert expired["attempts"] == 0
    assert executions(db, job) == []
    assert stop_gracefully(worker) == 0


def attempt_durations(log: str, job: int) -> list[float]:
    """How long each ended attempt of a job ran, from the worker's log."""
    return [float(d) for d in re.findall(rf"job {job} \S+ attempt \d/\d failed in ([\d.]+)s", log)]


def test_async_task_past_its_timeout_is_cancelled_then_retried_then_failed(
    db: psycopg.Connection[Any], spawn_worker: SpawnWorker
) -> None:
    worker = spawn_worker()
    job = enqueue(db, apps.sleep_forever)
    failed = wait_for_status(db, job, "failed")
    assert failed["attempts"] == 2, "retried once per its policy, then FAILED"
    assert is_timeout(failed["error"]), failed["error"]
    assert [attempt for attempt, _ in executions(db, job)] == [1, 2]
    head = f"job {job} tests.acceptance.apps.sleep_forever"
    [first] = worker.log_lines(f"{head} attempt 1/2 failed in ")
    assert re.search(rf"retry in 0\.10s: \S*TaskTimeout: {re.escape(TIMEOUT_MESSAGE)}$", first)
    # The task never returns: only its timeout ended each attempt, and never before 0.5 s.
    durations = attempt_durations(worker.log(), job)
    assert len(durations) == 2
    assert all(d >= 0.5 for d in durations), durations
    assert stop_gracefully(worker) == 0


def test_sync_thread_task_past_its_timeout_is_ended_and_its_late_result_discarded(
    db: psycopg.Connection[Any], spawn_worker: SpawnWorker
) -> None:
    # Concurrency 4: three overrunning threads held at once, and a slot for the retry.
    worker = spawn_worker("--concurrency", "4")
    # Overruns on its first attempt only: the retry's outcome must stay.
    retried = enqueue(db, apps.overrun, [1])
    # Overruns on every attempt: the timeout failure must stay.
    failing = enqueue(db, apps.overrun, [1, 2])
    late = [(retried, 1), (failing, 1), (failing, 2)]
    late_flags = [apps.overrun_finished_flag(job, attempt) for job, attempt in late]

    def threads_returned() -> int:
        row = db.execute(
            "SELECT count(*) FROM acceptance_flags WHERE name = ANY(%s)", (late_flags,)
        ).fetchone()
        assert row is not None
        return int(row[0])

    done = wait_for_status(db, retried, "succeeded")
    assert (done["attempts"], done["result"]) == (2, "result of attempt 2")
    failed = wait_for_status(db, failing, "failed")
    assert failed["attempts"] == 2
    assert is_timeout(failed["error"]), failed["error"]
    # Every attempt ended while its thread was still blocked: the timeout ended it, not the
    # thread's return, and not before 0.5 s.
    assert threads_returned() == 0, "no overrunning thread can return before the release"
    for job in (retried, failing):
        assert all(d >= 0.5 for d in attempt_durations(worker.log(), job))

    # Let every overrunning thread return its late result...
    set_flag(db, apps.OVERRUN_RELEASE)
    wait_until(
        lambda: threads_returned() == len(late),
        timeout=60,
        interval=0.05,
        what="the late threads to return",
    )
    # ...and a later job's outcome to be written after anything those threads handed over.
    marker = enqueue(db, apps.record, 9)
    wait_for_status(db, marker, "succeeded")

    after = job_row(db, retried)
    assert (after["status"], after["attempts"], after["result"]) == (
        "succeeded",
        2,
        "result of attempt 2",
    )
    after = job_row(db, failing)
    assert (after["status"], after["attempts"], after["result"]) == ("failed", 2, None)
    assert is_timeout(after["error"]), after["error"]
    assert "late result" not in worker.log()
    assert stop_gracefully(worker) == 0
