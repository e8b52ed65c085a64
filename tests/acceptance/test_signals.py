"""Signals and kills sent to real worker processes: warm shutdown, forced stop, kill -9."""

from __future__ import annotations

import signal
import time
from typing import Any

import psycopg
import pytest

from pgqueue.tasks import Task
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

STOPPING = "stopping: no new jobs"
# A forced stop must not wait for the grace period; this one is far longer than the test.
LONG_GRACE = ("--shutdown-timeout", "600")
EXIT_FORCED = 1  # Worker.run_async: 1 when running jobs had to be interrupted


def check_warm_shutdown(
    db: psycopg.Connection[Any], spawn_worker: SpawnWorker, signum: signal.Signals
) -> None:
    worker = spawn_worker(*LONG_GRACE)
    running = enqueue(db, apps.block, "release")
    wait_started(db, running)

    worker.send(signum)
    worker.wait_for_log(STOPPING)
    late = enqueue(db, apps.record, 1)  # the worker has free slots, but no longer claims
    assert worker.poll() is None, "the worker waits for its running job"
    set_flag(db, "release")

    assert worker.wait(60) == 0
    finished = job_row(db, running)
    assert (finished["status"], finished["attempts"]) == ("succeeded", 1)
    assert finished["result"] == "released by release"
    left = job_row(db, late)
    assert (left["status"], left["attempts"], left["worker_id"]) == ("queued", 0, None)
    assert executions(db, late) == []
    assert worker.log_lines(f"job {running} tests.acceptance.apps.block attempt 1/3 succeeded")
    assert db.execute("SELECT count(*) FROM pgqueue_workers").fetchone() == (0,)


def test_sigterm_stops_claiming_and_lets_the_running_job_finish(
    db: psycopg.Connection[Any], spawn_worker: SpawnWorker
) -> None:
    check_warm_shutdown(db, spawn_worker, signal.SIGTERM)


def test_sigint_shuts_down_warm_like_sigterm(
    db: psycopg.Connection[Any], spawn_worker: SpawnWorker
) -> None:
    check_warm_shutdown(db, spawn_worker, signal.SIGINT)


@pytest.mark.parametrize("task", [apps.block, apps.ablock], ids=["sync", "async"])
def test_second_signal_stops_at_once_and_the_job_goes_back_to_the_queue(
    db: psycopg.Connection[Any], spawn_worker: SpawnWorker, task: Task[Any, Any]
) -> None:
    worker = spawn_worker(*LONG_GRACE)
    job = enqueue(db, task, "second-worker")  # not set while the first worker lives
    wait_started(db, job)

    worker.send(signal.SIGTERM)
    worker.wait_for_log(STOPPING)
    worker.send(signal.SIGTERM)
    assert worker.wait(30) == EXIT_FORCED

    # Back in the queue, and the interrupted attempt is not counted against the job.
    requeued = job_row(db, job)
    assert (requeued["status"], requeued["attempts"], requeued["worker_id"]) == ("queued", 0, None)
    assert requeued["error"]["type"] == "WorkerShutdown"

    set_flag(db, "second-worker")
    second = spawn_worker()
    done = wait_for_status(db, job, "succeeded")
    assert done["attempts"] == 1
    assert executions(db, job) == [(1, worker.pid), (1, second.pid)]


def test_second_signal_on_the_last_attempt_still_requeues_the_job(
    db: psycopg.Connection[Any], spawn_worker: SpawnWorker
) -> None:
    worker = spawn_worker(*LONG_GRACE)
    with db.transaction():  # committed together: the worker only ever sees max_attempts = 1
        job = apps.ablock.apply_async(args=("last-attempt",), connection=db).id
        db.execute("UPDATE pgqueue_jobs SET max_attempts = 1 WHERE id = %s", (job,))
    wait_started(db, job)
    worker.send(signal.SIGTERM)
    worker.wait_for_log(STOPPING)
    worker.send(signal.SIGTERM)
    assert worker.wait(30) == EXIT_FORCED
    requeued = job_row(db, job)
    assert (requeued["status"], requeued["attempts"]) == ("queued", 0)


def test_killed_worker_job_is_rescued_by_another_worker(
    db: psycopg.Connection[Any], spawn_worker: SpawnWorker, record_property: Any
) -> None:
    doomed = spawn_worker("--name", "doomed")
    job = enqueue(db, apps.block, "after-kill")
    wait_started(db, job)
    assert job_row(db, job)["worker_id"] == doomed.worker_id
    rescuer = spawn_worker("--name", "rescuer")

    killed_at = time.monotonic()
    assert doomed.kill() == -signal.SIGKILL
    set_flag(db, "after-kill")  # only a new attempt can see it: the old one died with its process

    def claimed_again() -> float | None:
        row = job_row(db, job)
        return time.monotonic() - killed_at if row["attempts"] >= 2 else None

    # A hang guard only: `make chaos` holds the rescue to its 5 s figure.
    rescue_seconds = wait_until(claimed_again, timeout=60, interval=0.02, what="the rescue")
    record_property("rescue_seconds", round(rescue_seconds, 2))
    print(f"job {job} claimed again {rescue_seconds:.2f}s after kill -9 of its worker")

    done = wait_for_status(db, job, "succeeded")
    assert done["attempts"] == 2
    assert executions(db, job) == [(1, doomed.pid), (2, rescuer.pid)]
    assert rescuer.log_lines(f"job {job} tests.acceptance.apps.block attempt 1/3: its worker was")
    assert stop_gracefully(rescuer) == 0
