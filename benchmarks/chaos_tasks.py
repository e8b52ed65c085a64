"""The tasks that `benchmarks/chaos.py` enqueues, loaded by its `pgqueue worker` processes.

Workers run `pgqueue worker --app chaos_tasks:app` from this folder and find the chaos database
in PGQUEUE_DSN. Each task works for a few milliseconds, then leaves one execution record, so the
chaos run counts how often each job really ran:

- `chaos.transactional` writes its record through `pgqueue.current_job().connection`: the record
  and the job's SUCCEEDED commit together or not at all, so a job never has two records.
- `chaos.plain` writes its record on a connection of its own, in autocommit: the record stays
  even if the worker dies before the job's outcome is written, which is what at-least-once
  delivery looks like from the outside.

The workflow run (`chaos.py --workflows`) builds chords of `chaos.transactional` members whose
callback is `chaos.gather`, and chains of `chaos.add` steps; both record their execution in
the job's own transaction like `chaos.transactional`, so a callback that ran twice would show
two records.

None lists anything in `autoretry_for`, as a user's task might not: a transactional attempt
whose job connection is cut is retried by pgqueue itself. A plain task retries its own record
write on a fresh connection after a cut, keyed by (job, attempt), so a cut never makes a plain
job run again on its own account.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any

import psycopg

import pgqueue

app = pgqueue.App()  # the DSN comes from PGQUEUE_DSN, set by chaos.py for each worker

TABLES_DDL = """
CREATE TABLE chaos_effects (
    job_id bigint NOT NULL,
    attempt int NOT NULL,
    pid int NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE chaos_executions (
    job_id bigint NOT NULL,
    attempt int NOT NULL,
    pid int NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (job_id, attempt)
);
CREATE TABLE chaos_workflows (
    workflow_id bigint PRIMARY KEY,
    kind text NOT NULL,                -- 'chord' or 'chain'
    steps bigint[] NOT NULL,           -- its jobs, parents before children: the last one is
                                       -- the chord's callback or the chain's last step
    expected jsonb NOT NULL            -- what the last step must return
);
"""

# Enough attempts that a job caught by several kills and cuts in a row still ends SUCCEEDED;
# chaos.py reports the most attempts any job needed.
MAX_ATTEMPTS = 10
RECORD_WRITE_DEADLINE = 30.0  # seconds a plain task keeps retrying its record after a cut

_local = threading.local()


def _attempt() -> pgqueue.JobContext:
    job = pgqueue.current_job()
    assert job is not None, "only a worker runs these tasks"
    return job


@app.task(
    name="chaos.transactional", transactional=True, max_attempts=MAX_ATTEMPTS, retry_backoff=0.1
)
def transactional(n: int, work_ms: float) -> int:
    """Work, then record the execution in the job's own transaction (exactly-once effect)."""
    job = _attempt()
    time.sleep(work_ms / 1000)  # the task's work
    _record_in_transaction(job)
    return n


@app.task(name="chaos.gather", transactional=True, max_attempts=MAX_ATTEMPTS, retry_backoff=0.1)
def gather(results: list[int]) -> list[int]:
    """A chord's callback: record the execution in the job's own transaction, return what the
    members returned (in the group's order)."""
    _record_in_transaction(_attempt())
    return results


@app.task(name="chaos.add", transactional=True, max_attempts=MAX_ATTEMPTS, retry_backoff=0.1)
def add(total: int, work_ms: float) -> int:
    """A chain's step: work, record the execution in the job's own transaction, return the
    parent's value plus one (the head is given 0)."""
    job = _attempt()
    time.sleep(work_ms / 1000)  # the task's work
    _record_in_transaction(job)
    return total + 1


def _record_in_transaction(job: pgqueue.JobContext) -> None:
    job.connection.execute(
        "INSERT INTO chaos_effects (job_id, attempt, pid) VALUES (%s, %s, %s)",
        (job.id, job.attempt, os.getpid()),
    )


@app.task(name="chaos.plain", max_attempts=MAX_ATTEMPTS, retry_backoff=0.1)
def plain(n: int, work_ms: float) -> int:
    """Work, then record the execution on a separate autocommit connection (at-least-once)."""
    job = _attempt()
    time.sleep(work_ms / 1000)  # the task's work
    _record_execution(job.id, job.attempt)
    return n


def _record_execution(job_id: int, attempt: int) -> None:
    """Insert the record, reconnecting after a cut; (job, attempt) is the key, so a write that
    committed just before the connection broke is not counted twice."""
    deadline = time.monotonic() + RECORD_WRITE_DEADLINE
    while True:
        try:
            _connection().execute(
                "INSERT INTO chaos_executions (job_id, attempt, pid) VALUES (%s, %s, %s) "
                "ON CONFLICT (job_id, attempt) DO NOTHING",
                (job_id, attempt, os.getpid()),
            )
            return
        except (psycopg.OperationalError, pgqueue.DatabaseUnavailable):
            _drop_connection()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)  # pause before reconnecting after a cut


def _drop_connection() -> None:
    conn: psycopg.Connection[Any] | None = getattr(_local, "conn", None)
    _local.conn = None
    if conn is not None:
        with contextlib.suppress(psycopg.Error):
            conn.close()


def _connection() -> psycopg.Connection[Any]:
    """This task thread's own autocommit connection, made again once it broke."""
    conn: psycopg.Connection[Any] | None = getattr(_local, "conn", None)
    if conn is None or conn.closed or conn.broken:
        conn = app.connect(autocommit=True)
        _local.conn = conn
    return conn
