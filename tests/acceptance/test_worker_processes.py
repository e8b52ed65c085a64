"""Real worker processes running jobs: exactly once across a fleet, unknown tasks, the log."""

from __future__ import annotations

import re
import signal
from typing import Any

import psycopg

from pgqueue.execute import UNKNOWN_TASK_PATIENCE
from tests.acceptance import apps
from tests.acceptance.conftest import SpawnWorker
from tests.acceptance.helpers import (
    enqueue,
    enqueue_many,
    executions,
    job_row,
    stop_gracefully,
    wait_for_status,
)
from tests.conftest import wait_until

FLEET_SIZE = 4
FLEET_JOBS = 4000


def test_every_job_runs_exactly_once_across_worker_processes(
    db: psycopg.Connection[Any], spawn_worker: SpawnWorker
) -> None:
    fleet = [spawn_worker("--concurrency", "4", ready=False) for _ in range(FLEET_SIZE)]
    for worker in fleet:
        worker.wait_ready()
    # Half sync tasks (thread pool), half async ones (event loop), all in one transaction.
    enqueue_many(db, [(apps.record if n % 2 else apps.arecord, (n,)) for n in range(FLEET_JOBS)])

    def finished() -> bool:
        row = db.execute(
            "SELECT count(*) FROM pgqueue_all_jobs WHERE status NOT IN ('queued', 'running')"
        ).fetchone()
        return row is not None and row[0] == FLEET_JOBS

    wait_until(finished, timeout=120, interval=0.25, what=f"{FLEET_JOBS} jobs to finish")

    statuses = db.execute(
        "SELECT status::text, attempts, count(*) FROM pgqueue_all_jobs GROUP BY 1, 2"
    ).fetchall()
    assert statuses == [("succeeded", 1, FLEET_JOBS)]
    total, distinct_jobs, max_attempt = db.execute(
        "SELECT count(*), count(DISTINCT job_id), max(attempt) FROM acceptance_executions"
    ).fetchone() or (None, None, None)
    assert (total, distinct_jobs, max_attempt) == (FLEET_JOBS, FLEET_JOBS, 1)
    row = db.execute(
        "SELECT count(*) FROM pgqueue_all_jobs WHERE result = args -> 0 AND error IS NULL"
    ).fetchone()
    assert row is not None and row[0] == FLEET_JOBS, "every job kept its own result"
    pids = {row[0] for row in db.execute("SELECT DISTINCT pid FROM acceptance_executions")}
    assert pids == {worker.pid for worker in fleet}, "every worker process took part"

    for worker in fleet:
        worker.send(signal.SIGTERM)
    assert [worker.wait(60) for worker in fleet] == [0] * FLEET_SIZE
    assert db.execute("SELECT count(*) FROM pgqueue_workers").fetchone() == (0,)


def test_worker_logs_one_line_per_attempt_outcome(
    db: psycopg.Connection[Any], spawn_worker: SpawnWorker
) -> None:
    worker = spawn_worker()
    ok = enqueue(db, apps.record, 7)
    failing = enqueue(db, apps.always_fails)
    wait_for_status(db, ok, "succeeded")
    wait_for_status(db, failing, "failed")
    assert stop_gracefully(worker) == 0

    [succeeded] = worker.log_lines(f"job {ok} ")
    assert re.search(
        rf"job {ok} tests.acceptance.apps.record attempt 1/3 succeeded in \d+\.\d{{3}}s$",
        succeeded,
    )
    head = f"job {failing} tests.acceptance.apps.always_fails"
    lines = worker.log_lines(f"job {failing} ")
    expected = [
        rf"{head} attempt 1/2 failed in \d+\.\d{{3}}s, retry in 0\.10s: "
        r"ValueError: this task always fails$",
        rf"{head} attempt 2/2 failed in \d+\.\d{{3}}s: ValueError: this task always fails$",
    ]
    assert len(lines) == len(expected), lines
    for line, pattern in zip(lines, expected, strict=True):
        assert re.search(pattern, line), (line, pattern)
    assert [attempt for attempt, _ in executions(db, failing)] == [1, 2]


def test_worker_logs_each_attempts_start_at_debug_level(
    db: psycopg.Connection[Any], spawn_worker: SpawnWorker
) -> None:
    worker = spawn_worker("--log-level", "DEBUG")
    ok = enqueue(db, apps.record, 7)
    wait_for_status(db, ok, "succeeded")
    assert stop_gracefully(worker) == 0

    head = f"job {ok} tests.acceptance.apps.record attempt 1/3"
    lines = worker.log_lines(f"job {ok} ")
    assert len(lines) == 2, lines
    assert re.search(rf"DEBUG .*{head} running$", lines[0]), lines
    assert re.search(rf"{head} succeeded in \d+\.\d{{3}}s$", lines[1]), lines


def test_job_of_unknown_task_waits_in_the_queue_and_worker_keeps_running(
    db: psycopg.Connection[Any], spawn_worker: SpawnWorker
) -> None:
    worker = spawn_worker("--poll-interval", "0.2")
    # Rows written by code this worker does not have (and without a NOTIFY: found by polling):
    # one just enqueued, one enqueued longer ago than the worker waits for its task.
    rows = db.execute(
        "INSERT INTO pgqueue_jobs (task_name, created_at) VALUES"
        " ('nope.missing', now()), ('nope.ancient', now() - %s - interval '1 minute')"
        " RETURNING id",
        (UNKNOWN_TASK_PATIENCE,),
    ).fetchall()
    unknown, ancient = (row[0] for row in rows)

    waiting = wait_until(
        lambda: worker.log_lines(f"job {unknown} nope.missing attempt 1/3: no task named"),
        what="the unknown job's log line",
    )
    assert "back in the queue for 5s, attempt not counted" in waiting[0]
    # The line is logged when the attempt ends; its outcome is written by the next batch.
    row = wait_until(
        lambda: (r := job_row(db, unknown))["status"] == "queued" and r,
        what="the unknown job back in the queue",
    )
    assert (row["attempts"], row["error"]["type"]) == (0, "UnknownTask")

    failed = wait_for_status(db, ancient, "failed")
    assert failed["attempts"] == 1
    assert failed["error"]["type"] == "UnknownTask"
    assert "nope.ancient" in failed["error"]["message"]
    assert worker.log_lines(f"job {ancient} nope.ancient attempt 1/3 failed in ")

    later = enqueue(db, apps.record, 1)
    assert wait_for_status(db, later, "succeeded")["result"] == 1
    assert worker.poll() is None, "the worker is still running"
    assert stop_gracefully(worker) == 0


def test_retry_runs_when_it_comes_due_not_at_the_next_poll(
    db: psycopg.Connection[Any], spawn_worker: SpawnWorker
) -> None:
    # The retry is 0.1 s after the first failure; the poll fallback would take 60 s. The
    # retry's NOTIFY carries its due time, and an idle worker must set a timer for it.
    worker = spawn_worker("--poll-interval", "60")
    failing = enqueue(db, apps.always_fails)
    wait_until(
        lambda: len(executions(db, failing)) == 2,
        timeout=30,
        interval=0.05,
        what="the second attempt, long before the next poll",
    )
    assert wait_for_status(db, failing, "failed")["attempts"] == 2
    assert stop_gracefully(worker) == 0
