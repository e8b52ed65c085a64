"""A late worker cannot overwrite a job that was taken from it; lost workers' jobs come back."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

import pgqueue
from pgqueue import queries
from pgqueue.claim import claim_params
from pgqueue.complete import write_outcomes
from pgqueue.maintenance import rescue_lost_jobs, rescue_orphaned_jobs
from pgqueue.outcome import ClaimedJob, Failed, Outcome, RetryLater, Succeeded, simple_error
from pgqueue.schema import ADVISORY_LOCK_NAMESPACE
from tests.conftest import wait_until

LOCK_GRACE = 2.0
HEARTBEAT_TIMEOUT = 30.0


def _claim_by_hand(conn: psycopg.Connection[Any], worker_id: int) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(queries.CLAIM_JOBS, claim_params(["default"], 1, worker_id)).fetchall()
    assert len(rows) == 1
    return rows[0]


def _row(conn: psycopg.Connection[Any], job_id: int) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(queries.FETCH_JOB, {"id": job_id}).fetchone()
    assert row is not None
    return row


def _write(dsn: str, outcome: Outcome) -> set[int]:
    async def scenario() -> set[int]:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            return await write_outcomes(conn, [outcome])

    return asyncio.run(scenario())


LATE = simple_error("RuntimeError", "late")
OUTCOMES: dict[str, Callable[[ClaimedJob], Outcome]] = {
    "succeeded": lambda job: Succeeded(job, '"late"'),
    "failed": lambda job: Failed(job, LATE),
    "retry": lambda job: RetryLater(job, LATE, delay=0.0),
}


@pytest.mark.parametrize("kind", OUTCOMES)
def test_outcome_from_a_stale_claim_leaves_the_row_unchanged(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any], kind: str
) -> None:
    @app.task
    def slow() -> None: ...

    job = slow.delay()
    first = _claim_by_hand(conn, _lost_worker(conn, heartbeat_age=LOCK_GRACE + 5))
    assert first["attempts"] == 1
    stale = ClaimedJob(
        id=job.id,
        queue="default",
        task_name=slow.name,
        args=[],
        kwargs={},
        priority=0,
        attempt=first["attempts"],
        max_attempts=first["max_attempts"],
        lease=first["lease"],
    )
    # Meanwhile the job was rescued from worker 1 and claimed again by worker 2.
    assert [r["id"] for r in _rescue(dsn)] == [job.id]
    second = _claim_by_hand(conn, _lost_worker(conn, heartbeat_age=0))
    before = _row(conn, job.id)

    assert _write(dsn, OUTCOMES[kind](stale)) == set()
    assert _row(conn, job.id) == before
    assert before["status"] == "running" and before["attempts"] == 2

    # The current claim's outcome still applies.
    current = dataclasses.replace(stale, attempt=2, lease=second["lease"])
    assert _write(dsn, Succeeded(current, '"on time"')) == {job.id}
    assert app.get_job(job.id).wait(timeout=5) == "on time"


def _lost_worker(conn: psycopg.Connection[Any], heartbeat_age: float) -> int:
    row = conn.execute(
        """
        INSERT INTO pgqueue_workers (name, hostname, pid, queues, concurrency, heartbeat_at)
        VALUES ('gone', 'nowhere', 1, '{default}', 1, now() - %s * interval '1 second')
        RETURNING id
        """,
        (heartbeat_age,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _claim_by_a_gone_worker(conn: psycopg.Connection[Any]) -> None:
    """Claim the queued job for a worker, then delete the worker's row: an orphaned job."""
    gone = _lost_worker(conn, heartbeat_age=0)
    _claim_by_hand(conn, gone)
    conn.execute("DELETE FROM pgqueue_workers WHERE id = %s", (gone,))


def _rescue(dsn: str) -> list[dict[str, Any]]:
    # The lock grace also runs from the server's start (a restart ends every session): on a
    # server started moments ago, as the embedded one is at the start of a test session,
    # nothing can be rescued until it has been up for the grace.
    with psycopg.connect(dsn, autocommit=True) as conn:
        wait_until(
            lambda: conn.execute(
                "SELECT clock_timestamp() - pg_postmaster_start_time() > %s * interval '1 second'",
                (LOCK_GRACE,),
            ).fetchone()[0],  # type: ignore[index]
            timeout=LOCK_GRACE + 30,
            what="the server to have been up for the lock grace",
        )

    async def scenario() -> list[dict[str, Any]]:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as aconn:
            return await rescue_lost_jobs(
                aconn, lock_grace=LOCK_GRACE, heartbeat_timeout=HEARTBEAT_TIMEOUT
            )

    return asyncio.run(scenario())


def _workers(conn: psycopg.Connection[Any]) -> list[int]:
    return [row[0] for row in conn.execute("SELECT id FROM pgqueue_workers").fetchall()]


def test_job_of_a_worker_without_its_lock_goes_back_to_the_queue(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    @app.task(max_attempts=3)
    def interrupted() -> None: ...

    job = interrupted.delay()
    worker_id = _lost_worker(conn, heartbeat_age=LOCK_GRACE + 5)
    _claim_by_hand(conn, worker_id)

    rescued = _rescue(dsn)
    assert [(r["id"], r["status"], r["attempts"]) for r in rescued] == [(job.id, "queued", 1)]
    job.refresh()
    assert job.status is pgqueue.JobStatus.QUEUED
    assert job.attempts == 1
    assert job.error is not None and job.error["type"] == "WorkerLost"
    assert _workers(conn) == []
    assert _rescue(dsn) == []  # idempotent


def test_rescued_job_keeps_its_place_ahead_of_jobs_enqueued_after_it(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    @app.task
    def in_line(n: int) -> None: ...

    first = in_line.delay(0)
    assert _claim_by_hand(conn, _lost_worker(conn, heartbeat_age=LOCK_GRACE + 5))["id"] == first.id
    for n in range(1, 4):  # a backlog builds up while its worker is dying
        in_line.delay(n)

    assert [r["id"] for r in _rescue(dsn)] == [first.id]
    # The next claim takes the rescued job, not the backlog queued behind it: a lost worker
    # must not send its jobs to the back of a long queue.
    assert _claim_by_hand(conn, _lost_worker(conn, heartbeat_age=0))["id"] == first.id


def test_job_of_a_lost_worker_with_no_attempts_left_ends_failed(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    @app.task(max_attempts=1)
    def crashes_its_worker() -> None: ...

    job = crashes_its_worker.delay()
    worker_id = _lost_worker(conn, heartbeat_age=LOCK_GRACE + 5)
    _claim_by_hand(conn, worker_id)

    assert [r["status"] for r in _rescue(dsn)] == ["failed"]
    with pytest.raises(pgqueue.JobFailed) as info:
        job.wait(timeout=5)
    assert info.value.exc_type == "WorkerLost"
    assert "attempt 1 of 1" in info.value.exc_message
    assert job.attempts == 1
    assert job.finished_at is not None


def test_worker_holding_its_lock_keeps_its_jobs(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    @app.task
    def long_running() -> None: ...

    job = long_running.delay()
    worker_id = _lost_worker(conn, heartbeat_age=LOCK_GRACE + 5)
    _claim_by_hand(conn, worker_id)
    with psycopg.connect(dsn, autocommit=True) as session:
        session.execute("SELECT pg_advisory_lock(%s, %s)", (ADVISORY_LOCK_NAMESPACE, worker_id))
        assert _rescue(dsn) == []
        assert job.refresh().status is pgqueue.JobStatus.RUNNING
    # The session ended, and its lock with it: now the worker is lost.
    assert [r["id"] for r in _rescue(dsn)] == [job.id]


def test_worker_within_its_lock_grace_keeps_its_jobs(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    @app.task
    def reconnecting() -> None: ...

    job = reconnecting.delay()
    worker_id = _lost_worker(conn, heartbeat_age=0)
    _claim_by_hand(conn, worker_id)
    assert _rescue(dsn) == []
    assert job.refresh().status is pgqueue.JobStatus.RUNNING
    assert _workers(conn) == [worker_id]


def test_worker_with_a_stale_heartbeat_is_lost_even_holding_its_lock(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    @app.task
    def partitioned() -> None: ...

    job = partitioned.delay()
    worker_id = _lost_worker(conn, heartbeat_age=HEARTBEAT_TIMEOUT + 5)
    _claim_by_hand(conn, worker_id)
    with psycopg.connect(dsn, autocommit=True) as session:
        session.execute("SELECT pg_advisory_lock(%s, %s)", (ADVISORY_LOCK_NAMESPACE, worker_id))
        assert [r["id"] for r in _rescue(dsn)] == [job.id]
    assert job.refresh().status is pgqueue.JobStatus.QUEUED


@pytest.mark.parametrize("left_by", ["a lost worker", "a worker row that is gone"])
def test_rescued_job_runs_again_on_a_live_worker(
    app: pgqueue.App,
    conn: psycopg.Connection[Any],
    start_worker: Callable[..., Any],
    left_by: str,
) -> None:
    """A starting worker's rescuer finds the job: a lost worker's at its first pass, one whose
    worker row is gone at the orphan check it runs when it starts."""

    @app.task(max_attempts=3)
    def survives() -> int:
        context = pgqueue.current_job()
        assert context is not None
        return context.attempt

    job = survives.delay()
    if left_by == "a lost worker":
        _claim_by_hand(conn, _lost_worker(conn, heartbeat_age=LOCK_GRACE + 5))
    else:
        _claim_by_a_gone_worker(conn)
    start_worker(app, rescue_interval=0.1)
    assert job.wait(timeout=15) == 2


def test_a_claim_whose_reply_was_lost_is_given_back_and_runs(
    app: pgqueue.App, conn: psycopg.Connection[Any], start_worker: Callable[..., Any]
) -> None:
    ran: list[int] = []

    @app.task
    def stranded() -> None:
        context = pgqueue.current_job()
        assert context is not None
        ran.append(context.attempt)

    worker = start_worker(app, queues=("default",))
    worker_id = worker.worker.presence.worker_id
    assert worker_id is not None
    # The worker's claim committed, but its reply never arrived: the job is running under
    # the worker's id and the worker does not know it.
    job = stranded.apply_async(queue="nowhere")
    conn.execute(queries.CLAIM_JOBS, claim_params(["nowhere"], 1, worker_id))
    conn.execute(
        "UPDATE pgqueue_jobs SET queue = 'default', started_at = now() - interval '1 minute'"
        " WHERE id = %s",
        (job.id,),
    )
    job.wait(timeout=30)
    assert ran == [1]  # given back uncounted, then run once


def test_a_running_job_whose_worker_row_is_gone_is_rescued_by_the_orphan_check(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    """A worker that exited without writing every outcome leaves running jobs and no row. The
    per-second rescue looks only at the jobs of workers it finds lost; the orphan check, run
    less often, reads every running job and finds these."""

    @app.task(max_attempts=1)
    def left_behind() -> None: ...

    job = left_behind.delay()
    _claim_by_a_gone_worker(conn)

    async def passes() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as aconn:
            lost = await rescue_lost_jobs(aconn, lock_grace=60, heartbeat_timeout=60)
            return lost, await rescue_orphaned_jobs(aconn)

    lost, orphaned = asyncio.run(passes())
    assert lost == []
    assert [(r["id"], r["status"]) for r in orphaned] == [(job.id, "failed")]
    with pytest.raises(pgqueue.JobFailed, match="worker lost"):
        job.wait(timeout=5)


def _lease(conn: psycopg.Connection[Any], job_id: int) -> Any:
    row = conn.execute("SELECT lease FROM pgqueue_jobs WHERE id = %s", (job_id,)).fetchone()
    assert row is not None
    return row[0]


@pytest.mark.parametrize("how", ["retry", "refund", "release", "rescue"])
def test_a_job_back_in_the_queue_holds_no_lease(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any], how: str
) -> None:
    """A lease means nothing once its job left `running`: kept, it would let the old claim's
    late outcome match a claim made by a worker that does not draw leases (an older release
    in a rolling deploy)."""

    @app.task(max_attempts=3)
    def noop() -> None: ...

    job = noop.delay()
    worker_id = _lost_worker(conn, heartbeat_age=0 if how != "rescue" else 3600)
    claimed = _claim_by_hand(conn, worker_id)
    assert _lease(conn, job.id) == claimed["lease"] is not None
    claim = ClaimedJob(job.id, "default", noop.name, [], {}, 0, 1, 3, claimed["lease"])
    if how == "retry":
        assert _write(dsn, RetryLater(claim, LATE, delay=0.0)) == {job.id}
    elif how == "refund":
        assert _write(dsn, RetryLater(claim, LATE, delay=0.0, refund_attempt=True)) == {job.id}
    elif how == "release":
        conn.execute(queries.RELEASE_UNSTARTED, {"ids": [job.id], "leases": [claimed["lease"]]})
    else:
        assert [row["id"] for row in _rescue(dsn)] == [job.id]
    assert _row(conn, job.id)["status"] == "queued"
    assert _lease(conn, job.id) is None
