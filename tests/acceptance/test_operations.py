"""Operations on a running fleet, through the command line, with real `pgqueue worker` processes:
a paused queue holds on every worker and through a restart while jobs and periodic ticks keep
coming in, resuming wakes the workers by NOTIFY, and a failed job retried from the command line
runs again and succeeds."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.rows import dict_row

from tests.acceptance import apps
from tests.acceptance.conftest import SpawnWorker
from tests.acceptance.helpers import (
    executions,
    set_flag,
    stop_gracefully,
    wait_for_status,
    wait_started,
)
from tests.acceptance.test_cli import pgqueue
from tests.conftest import wait_until

# A poll tick no test outlives: a worker that starts a job was woken by a notification.
NEVER = "3600"
WORKER_ARGS = ("--queues", "work,other", "--concurrency", "2", "--poll-interval", NEVER)
SCHEDULE = "tick-into-work"


def _db_now(db: psycopg.Connection[Any]) -> datetime:
    row = db.execute("SELECT now()").fetchone()
    assert row is not None
    return row[0]  # type: ignore[no-any-return]


def _work_jobs(db: psycopg.Connection[Any]) -> list[dict[str, Any]]:
    with db.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            "SELECT id, status::text AS status, started_at, periodic_name FROM pgqueue_all_jobs"
            " WHERE queue = 'work' ORDER BY id"
        ).fetchall()


def _enqueue(db: psycopg.Connection[Any], queue: str, n: int) -> list[int]:
    return [apps.record.apply_async(args=(i,), queue=queue, connection=db).id for i in range(n)]


def _ok(*args: str, dsn: str) -> str:
    result = pgqueue(*args, dsn=dsn)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_pause_holds_on_every_worker_and_through_a_restart_and_resume_wakes_them(
    dsn: str, db: psycopg.Connection[Any], spawn_worker: SpawnWorker
) -> None:
    workers = [spawn_worker(*WORKER_ARGS, ready=False) for _ in range(2)]
    for worker in workers:
        worker.wait_ready()
    for job_id in _enqueue(db, "work", 4):  # both serve "work"
        wait_for_status(db, job_id, "succeeded")

    _ok("queues", "pause", "work", dsn=dsn)
    pause_returned = _db_now(db)

    # Enqueueing goes on, and so does claiming from the other queue...
    waiting = _enqueue(db, "work", 6)
    for job_id in _enqueue(db, "other", 4):
        wait_for_status(db, job_id, "succeeded")
    # ...and periodic ticks still make jobs in the paused queue.
    _ok(
        "periodic",
        "add",
        SCHEDULE,
        "--task",
        apps.record.name,
        "--every",
        "1",
        "--queue",
        "work",
        "--args",
        "[99]",
        dsn=dsn,
    )
    wait_until(
        lambda: any(job["periodic_name"] == SCHEDULE for job in _work_jobs(db)),
        timeout=30,
        what="a periodic tick into the paused queue",
    )

    # A restarted worker finds the pause in the database. Every slot of the fleet is taken by
    # jobs of the other queue, so the new worker has claimed (reading every queue from its
    # start) since it started.
    assert stop_gracefully(workers[0]) == 0
    restarted = spawn_worker(*WORKER_ARGS)
    blocked = [
        apps.block.apply_async(args=("other-done",), queue="other", connection=db).id
        for _ in range(4)
    ]
    for job_id in blocked:
        wait_started(db, job_id)
    assert restarted.pid in {pid for job_id in blocked for _, pid in executions(db, job_id)}
    set_flag(db, "other-done")
    for job_id in blocked:
        wait_for_status(db, job_id, "succeeded")

    # No claim that began after the pause committed took a job of the paused queue (one in
    # flight at that moment started before it, so the second allowed is generous).
    jobs = _work_jobs(db)
    late = [
        job
        for job in jobs
        if job["started_at"] is not None
        and job["started_at"] >= pause_returned + timedelta(seconds=1)
    ]
    assert late == []
    pending = [job["id"] for job in jobs if job["status"] == "queued"]
    assert set(waiting) <= set(pending)
    assert all(not executions(db, job_id) for job_id in pending)

    # No more ticks (and their notifications) from here on; every worker is idle, waiting for a
    # notification or its hour-long poll tick.
    _ok("periodic", "disable", SCHEDULE, dsn=dsn)
    pending = [job["id"] for job in _work_jobs(db) if job["status"] == "queued"]

    assert "resumed" in _ok("queues", "resume", "work", dsn=dsn)
    row = db.execute("SELECT updated_at FROM pgqueue_queues WHERE name = 'work'").fetchone()
    assert row is not None
    resumed_at = row[0]
    for job_id in pending:
        wait_for_status(db, job_id, "succeeded", timeout=30)
    starts = [job["started_at"] for job in _work_jobs(db) if job["id"] in pending]
    assert min(starts) - resumed_at < timedelta(seconds=2)
    assert all(len(executions(db, job_id)) == 1 for job_id in pending)


def test_a_failed_job_retried_from_the_command_line_runs_again_and_succeeds(
    dsn: str, db: psycopg.Connection[Any], spawn_worker: SpawnWorker
) -> None:
    worker = spawn_worker("--poll-interval", NEVER)
    job_id = apps.fails_until_flag.apply_async(args=("fixed",), connection=db).id
    failed = wait_for_status(db, job_id, "failed")
    assert failed["error"]["message"] == "flag 'fixed' is not set yet"

    set_flag(db, "fixed")  # what made it fail is fixed
    out = _ok("jobs", "retry", str(job_id), dsn=dsn)
    assert (
        out == f"job {job_id}: queued to run again (its earlier attempts are kept in its history)\n"
    )

    done = wait_for_status(db, job_id, "succeeded")
    assert done["result"] == "succeeded once fixed was set"
    assert (done["attempts"], done["error"], done["worker_id"]) == (1, None, worker.worker_id)
    row = db.execute("SELECT history FROM pgqueue_all_jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    [earlier] = row[0]
    assert (earlier["attempt"], earlier["outcome"], earlier["worker_id"]) == (
        1,
        "failed",
        worker.worker_id,
    )
    assert earlier["error"]["message"] == "flag 'fixed' is not set yet"
    assert executions(db, job_id) == [(1, worker.pid), (1, worker.pid)]

    # A job that succeeded is not run again.
    again = pgqueue("jobs", "retry", str(job_id), dsn=dsn)
    assert again.returncode == 1
    assert f"job {job_id}: succeeded, not retried" in again.stderr
