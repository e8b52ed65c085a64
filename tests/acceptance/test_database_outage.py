"""The server ends every connection of a running worker (`pg_terminate_backend`), twice, while
jobs stream through it: the worker logs it, reconnects and carries on, without a restart, and
no job is lost. A job can run twice only if it was in flight at a cut and rescued (which a
worker that reconnects within its lock grace avoids: it resumes under the same id).
"""

from __future__ import annotations

from typing import Any

import psycopg

from tests.acceptance import apps
from tests.acceptance.conftest import SpawnWorker
from tests.acceptance.helpers import enqueue_many, stop_gracefully
from tests.conftest import wait_until

CONCURRENCY = 4
CUTS = 2
JOBS = 800  # 20 ms each, 4 at a time: a stream that lasts well past both cuts
PROGRESS_BETWEEN_CUTS = 100
LOST = "lost the listening connection, reconnecting"


def finished_jobs(db: psycopg.Connection[Any]) -> int:
    row = db.execute(
        "SELECT count(*) FROM pgqueue_all_jobs WHERE status NOT IN ('queued', 'running')"
    ).fetchone()
    assert row is not None
    return int(row[0])


def running_jobs(db: psycopg.Connection[Any]) -> int:
    row = db.execute("SELECT count(*) FROM pgqueue_all_jobs WHERE status = 'running'").fetchone()
    assert row is not None
    return int(row[0])


def terminate_other_backends(db: psycopg.Connection[Any]) -> int:
    """End every session on the test database but this one; how many were ended."""
    rows = db.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchall()
    return sum(1 for (ended,) in rows if ended)


def test_worker_survives_its_connections_being_terminated_twice(
    db: psycopg.Connection[Any], spawn_worker: SpawnWorker
) -> None:
    worker = spawn_worker("--concurrency", str(CONCURRENCY))
    enqueue_many(db, [(apps.steady if n % 2 else apps.asteady, (n, 0.02)) for n in range(JOBS)])

    in_flight_at_cuts: list[int] = []
    for cut in range(1, CUTS + 1):
        target = finished_jobs(db) + PROGRESS_BETWEEN_CUTS
        wait_until(
            lambda target=target: finished_jobs(db) >= target,
            timeout=60,
            interval=0.05,
            what=f"{PROGRESS_BETWEEN_CUTS} more jobs to finish before cut {cut}",
        )
        # In flight: claimed and not yet written back (finished jobs whose outcome waits in
        # the worker's completer count too, so this can exceed the concurrency). Counted on
        # both sides of the cut: a session ended mid-commit may still commit.
        before = running_jobs(db)
        # The worker's listening, claiming, completing and maintenance sessions, and its
        # tasks' own connections: at least the first two are always open.
        assert terminate_other_backends(db) >= 2
        in_flight_at_cuts.append(max(before, running_jobs(db)))
        wait_until(
            lambda cut=cut: len(worker.log_lines(LOST)) >= cut,
            timeout=30,
            interval=0.05,
            what=f"the worker to notice cut {cut}",
        )
        assert worker.poll() is None, "the worker keeps running"

    wait_until(lambda: finished_jobs(db) == JOBS, timeout=120, interval=0.1, what="every job")
    assert worker.poll() is None
    statuses = db.execute(
        "SELECT status::text, count(*) FROM pgqueue_all_jobs GROUP BY 1"
    ).fetchall()
    assert statuses == [("succeeded", JOBS)], "none lost, none failed"
    # A task whose own bookkeeping INSERT was cut may have retried it: an execution is a
    # distinct (job, attempt, process).
    row = db.execute(
        "SELECT count(DISTINCT job_id),"
        " (SELECT count(*) FROM (SELECT DISTINCT job_id, attempt, pid"
        "  FROM acceptance_executions) AS e)"
        " FROM acceptance_executions"
    ).fetchone()
    assert row is not None
    executed, executions = row
    duplicates = executions - executed
    print(
        f"{CUTS} cuts of every connection: {JOBS} jobs succeeded, jobs in flight at the cuts "
        f"{in_flight_at_cuts}, duplicate executions {duplicates}"
    )
    assert executed == JOBS, "every job ran"
    assert duplicates <= sum(in_flight_at_cuts)
    row = db.execute("SELECT count(*) FROM pgqueue_all_jobs WHERE result = args -> 0").fetchone()
    assert row == (JOBS,)
    assert stop_gracefully(worker) == 0
