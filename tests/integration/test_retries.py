"""Retries: autoretry_for with backoff, `raise pgqueue.Retry`, and giving up."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable

import pytest

import pgqueue
from tests.conftest import WorkerThread

StartWorker = Callable[..., WorkerThread]

# A worker poll interval no test outlives: a retry that runs at all was run by its own timer.
# Deadlines are then only hang guards; no elapsed time is held to an upper limit.
NEVER = 3600.0
PATIENCE = 60.0


class Flaky(ConnectionError):
    """A retryable failure."""


def test_autoretry_exception_is_retried_until_max_attempts_then_failed(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    attempts: list[int] = []

    @app.task(max_attempts=3, autoretry_for=(ConnectionError,), retry_backoff=False)
    def always_flaky() -> None:
        context = pgqueue.current_job()
        assert context is not None
        attempts.append(context.attempt)
        raise Flaky(f"down on attempt {context.attempt}")

    start_worker(app)
    job = always_flaky.delay()
    with pytest.raises(pgqueue.JobFailed) as info:
        job.wait(timeout=15)
    assert info.value.exc_type.endswith("Flaky")
    assert info.value.exc_message == "down on attempt 3"
    assert attempts == [1, 2, 3]
    assert job.attempts == job.max_attempts == 3
    assert job.status is pgqueue.JobStatus.FAILED


def test_autoretry_succeeds_once_the_failure_goes_away(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    @app.task(max_attempts=5, autoretry_for=(ConnectionError,), retry_backoff=False)
    def recovers() -> str:
        context = pgqueue.current_job()
        assert context is not None
        if context.attempt < 3:
            raise Flaky("not yet")
        return f"ok on {context.attempt}"

    start_worker(app)
    job = recovers.delay()
    assert job.wait(timeout=15) == "ok on 3"
    assert job.attempts == 3
    assert job.error is None  # a success clears the last retry's error


def test_retries_are_spaced_by_the_backoff(app: pgqueue.App, start_worker: StartWorker) -> None:
    started: list[float] = []

    @app.task(max_attempts=3, autoretry_for=(Flaky,), retry_backoff=0.3, retry_jitter=False)
    def spaced() -> None:
        started.append(time.monotonic())
        raise Flaky("again")

    start_worker(app, poll_interval=NEVER)  # each retry is run by its own timer, not a poll
    with pytest.raises(pgqueue.JobFailed):
        spaced.delay().wait(timeout=PATIENCE)
    assert len(started) == 3
    gaps = [later - earlier for earlier, later in itertools.pairwise(started)]
    # What the policy promises: never sooner than 0.3 s, then 0.6 s.
    assert gaps[0] >= 0.3
    assert gaps[1] >= 0.6


def test_raise_retry_with_countdown_runs_the_job_again(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    started: list[float] = []

    @app.task(max_attempts=3)
    def polls() -> str:
        started.append(time.monotonic())
        context = pgqueue.current_job()
        assert context is not None
        if context.attempt == 1:
            raise pgqueue.Retry(countdown=0.2, reason="not ready")
        return "ready"

    start_worker(app)
    job = polls.delay()
    assert job.wait(timeout=15) == "ready"
    assert job.attempts == 2
    assert started[1] - started[0] >= 0.2


def test_retry_on_the_last_attempt_ends_failed_saying_so(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    @app.task(max_attempts=2)
    def never_ready() -> None:
        raise pgqueue.Retry(countdown=0, reason="still waiting")

    start_worker(app)
    job = never_ready.delay()
    with pytest.raises(pgqueue.JobFailed) as info:
        job.wait(timeout=15)
    assert info.value.exc_type == "Retry"
    assert "still waiting" in info.value.exc_message
    assert "attempt 2 of 2 was the last" in info.value.exc_message
    assert job.attempts == 2
    assert job.status is pgqueue.JobStatus.FAILED


def test_an_outcome_the_database_refuses_ends_the_job_failed_not_stuck(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    # A retry delay past PostgreSQL's timestamp range: the database refuses to store it.
    @app.task(
        max_attempts=3,
        autoretry_for=(ValueError,),
        retry_backoff=1e300,
        retry_backoff_max=1e300,
        retry_jitter=False,
    )
    def doomed() -> None:
        raise ValueError("boom")

    @app.task
    def fine() -> str:
        return "still writing outcomes"

    start_worker(app)
    job = doomed.delay()
    with pytest.raises(pgqueue.JobFailed) as info:
        job.wait(timeout=15)
    assert info.value.exc_type == "OutcomeNotStored"
    assert "refused this attempt's queued outcome" in info.value.exc_message
    assert fine.delay().wait(timeout=15) == "still writing outcomes"


def test_retry_without_a_reason_on_the_last_attempt_reads_plainly(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    @app.task(max_attempts=1)
    def once() -> None:
        raise pgqueue.Retry(countdown=0)

    start_worker(app)
    with pytest.raises(pgqueue.JobFailed) as info:
        once.delay().wait(timeout=15)
    assert info.value.exc_message == "retry requested but attempt 1 of 1 was the last"


def test_retries_due_close_together_each_run_on_their_own_timer(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    @app.task(max_attempts=2)
    def later(countdown: float) -> int:
        context = pgqueue.current_job()
        assert context is not None
        if context.attempt == 1:
            raise pgqueue.Retry(countdown=countdown)
        return context.attempt

    start_worker(app, poll_interval=NEVER)  # only the retry timers can make this test pass
    jobs = [later.delay(0.3), later.delay(0.35)]
    for job in jobs:
        assert job.wait(timeout=PATIENCE) == 2


def test_one_batch_of_retries_announces_every_due_time(app: pgqueue.App, dsn: str) -> None:
    import asyncio

    import psycopg

    from pgqueue import queries
    from pgqueue.claim import claim_params
    from pgqueue.complete import write_outcomes
    from pgqueue.outcome import ClaimedJob, RetryLater, simple_error

    @app.task
    def later() -> None: ...

    jobs = [later.delay(), later.delay()]
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(queries.CLAIM_JOBS, claim_params(["default"], 2, 1)).fetchall()
        leases = {row[0]: row[9] for row in rows}  # id, ..., lease: see CLAIM_JOBS
        listener = psycopg.connect(dsn, autocommit=True)
        listener.execute("LISTEN pgqueue_enqueued")
    claimed = [ClaimedJob(j.id, "default", later.name, [], {}, 0, 1, 3, leases[j.id]) for j in jobs]
    error = simple_error("Retry", "later")
    batch = [RetryLater(claimed[0], error, delay=10.0), RetryLater(claimed[1], error, delay=20.0)]

    async def write() -> set[int]:
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as aconn:
            return await write_outcomes(aconn, list(batch))

    assert asyncio.run(write()) == {j.id for j in jobs}
    with listener:
        payloads = {n.payload for n in listener.notifies(timeout=5, stop_after=2)}
    assert len(payloads) == 2  # one timer per due time, not only the earliest
