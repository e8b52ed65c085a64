"""One bad job ends that job with a clear error: it never stops the worker, holds a slot or
costs another job its outcome."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

import pgqueue
from pgqueue import queries
from pgqueue._connection import HOT_PATH_SETTINGS, ReconnectingConnection
from pgqueue.claim import claim_params
from pgqueue.complete import Completer
from pgqueue.outcome import ClaimedJob, Failed, Outcome, Succeeded, simple_error
from tests.conftest import WorkerThread

StartWorker = Callable[..., WorkerThread]


def _failure(job: pgqueue.Job, timeout: float = 15) -> pgqueue.JobFailed:
    with pytest.raises(pgqueue.JobFailed) as info:
        job.wait(timeout=timeout)
    return info.value


def _assert_alive(worker: WorkerThread) -> None:
    assert not worker.worker.crashed, "a background loop of the worker died"
    assert not worker.worker._stopping.is_set(), "the worker is stopping"


def test_one_unstorable_result_in_a_batch_fails_alone_and_the_others_are_written_once(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    """A lone surrogate cannot be encoded as UTF-8: it made the completer die with the whole
    batch unwritten (so the batch ran again elsewhere) and stopped the worker."""
    size = 6
    runs: Counter[int] = Counter()
    arrived = 0
    all_arrived: asyncio.Event | None = None

    @app.task
    async def finish_together(n: int) -> str:
        # Every job of the batch returns in the same turn of the event loop, so that their
        # outcomes go to the database in one statement.
        nonlocal arrived, all_arrived
        runs[n] += 1
        if all_arrived is None:
            all_arrived = asyncio.Event()
        arrived += 1
        if arrived == size:
            all_arrived.set()
        await all_arrived.wait()
        return "\ud83d" if n == 0 else f"fine {n}"

    worker = start_worker(app, concurrency=size)
    jobs = [app.get_job(i) for i in finish_together.delay_many([(n,) for n in range(size)])]
    failure = _failure(jobs[0])
    assert failure.exc_type == "TypeError"
    assert "result" in failure.exc_message
    assert "cannot be encoded as UTF-8" in failure.exc_message
    for n, job in enumerate(jobs[1:], start=1):
        assert job.wait(timeout=15) == f"fine {n}"
    assert all(app.get_job(job.id).attempts == 1 for job in jobs)
    assert runs == Counter(range(size))
    _assert_alive(worker)


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (lambda: 10**5000, "digits"),
        (lambda: [1, [2, [3]]] * 2 + [_self_referencing()], "refers to itself"),
        (lambda: _nested(100_000), "nested"),
        (lambda: {"k": _BadRepr()}, "_BadRepr"),
    ],
    ids=["huge-int", "self-reference", "deep-nesting", "repr-raises"],
)
def test_a_result_that_cannot_be_stored_ends_failed_and_frees_its_slot(
    app: pgqueue.App, start_worker: StartWorker, make: Callable[[], Any], what: str
) -> None:
    """Such values raised outside the code that turns results into outcomes: the job stayed
    running for the worker's whole life and its slot was never given back."""

    @app.task(max_attempts=3, autoretry_for=(Exception,))
    def returns_it() -> Any:
        return make()

    @app.task
    def after() -> str:
        return "the slot is free"

    worker = start_worker(app, concurrency=1)
    job = returns_it.delay()
    failure = _failure(job)
    assert failure.exc_type == "TypeError"
    assert "the task's return value cannot be stored as JSON" in failure.exc_message
    assert what in failure.exc_message
    assert job.attempts == 1
    assert after.delay().wait(timeout=15) == "the slot is free"
    _assert_alive(worker)


def _self_referencing() -> list[Any]:
    loop: list[Any] = [1]
    loop.append(loop)
    return loop


def _nested(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


class _BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr for you")


@pytest.mark.parametrize("timeout", [None, 30.0], ids=["no-timeout", "timeout"])
def test_an_async_task_raising_cancelled_error_itself_fails_the_attempt(
    app: pgqueue.App, start_worker: StartWorker, timeout: float | None
) -> None:
    """A CancelledError the worker did not cause (a library cancelled a child task) was taken
    for a shutdown: the job went back to the queue with its attempt given back, forever."""
    runs = 0

    @app.task(max_attempts=2, retry_backoff=0.01, timeout=timeout)
    async def child_was_cancelled() -> None:
        nonlocal runs
        runs += 1
        child = asyncio.ensure_future(asyncio.sleep(10))
        child.cancel()
        await child  # raises CancelledError into this task

    worker = start_worker(app)
    job = child_was_cancelled.delay()
    failure = _failure(job)
    assert failure.exc_type == "asyncio.exceptions.CancelledError"
    assert job.attempts == 1
    assert runs == 1
    _assert_alive(worker)


@pytest.mark.parametrize("raised", [SystemExit, KeyboardInterrupt, GeneratorExit])
@pytest.mark.parametrize("timeout", [None, 30.0], ids=["no-timeout", "timeout"])
def test_an_async_task_raising_a_base_exception_fails_and_the_worker_runs_on(
    app: pgqueue.App,
    start_worker: StartWorker,
    raised: type[BaseException],
    timeout: float | None,
) -> None:
    """asyncio lets SystemExit and KeyboardInterrupt raised in a Task out of the event loop:
    with a timeout, the attempt ran in a Task of its own, and the whole worker stopped."""

    @app.task(timeout=timeout)
    async def exits() -> None:
        await asyncio.sleep(0)
        raise raised("from the task")

    @app.task
    async def after() -> str:
        return "still running"

    worker = start_worker(app)
    failure = _failure(exits.delay())
    assert failure.exc_type == raised.__name__
    assert after.delay().wait(timeout=15) == "still running"
    _assert_alive(worker)


@pytest.mark.parametrize(
    "raised", [SystemExit, KeyboardInterrupt, GeneratorExit, asyncio.CancelledError]
)
def test_a_sync_task_raising_a_base_exception_fails_and_the_worker_runs_on(
    app: pgqueue.App, start_worker: StartWorker, raised: type[BaseException]
) -> None:
    @app.task
    def exits() -> None:
        raise raised("from the task")

    @app.task
    def after() -> str:
        return "still running"

    worker = start_worker(app)
    failure = _failure(exits.delay())
    assert failure.exc_type.endswith(raised.__name__)
    assert after.delay().wait(timeout=15) == "still running"
    _assert_alive(worker)


def test_an_exception_with_a_huge_unencodable_message_is_stored_bounded(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    @app.task
    def shouts() -> None:
        raise ValueError("\ud83d\x00" + "x" * 10_000_000)

    worker = start_worker(app)
    failure = _failure(shouts.delay())
    assert failure.exc_type == "ValueError"
    assert failure.exc_message.startswith("\\ud83d\\x00xxx")
    assert "characters cut" in failure.exc_message
    assert len(failure.exc_message) < 10_000
    assert failure.traceback is not None and len(failure.traceback) < 100_000
    _assert_alive(worker)


def test_an_exception_whose_str_raises_is_stored(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no str for you")

    @app.task
    def raises_it() -> None:
        raise Unprintable

    start_worker(app)
    failure = _failure(raises_it.delay())
    assert failure.exc_type.endswith("Unprintable")
    assert "str() failed" in failure.exc_message


# -- the completer itself ---------------------------------------------------------------------


def _claim(conn: psycopg.Connection[Any], count: int) -> list[ClaimedJob]:
    worker_id = conn.execute(
        "INSERT INTO pgqueue_workers (name, hostname, pid, queues, concurrency)"
        " VALUES ('test', 'test', 1, '{default}', 10) RETURNING id"
    ).fetchone()
    assert worker_id is not None
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            queries.CLAIM_JOBS, claim_params(["default"], count, worker_id[0])
        ).fetchall()
    assert len(rows) == count
    return [
        ClaimedJob(
            id=row["id"],
            queue=row["queue"],
            task_name=row["task_name"],
            args=[],
            kwargs={},
            priority=row["priority"],
            attempt=row["attempts"],
            max_attempts=row["max_attempts"],
            lease=row["lease"],
        )
        for row in rows
    ]


def test_the_completer_ends_an_outcome_it_cannot_encode_failed_and_writes_the_rest_once(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    """Whatever slips past the checks before it (here a result that is not valid UTF-8), the
    completer must not die with its batch: that one job ends FAILED, the rest are written."""

    @app.task
    def noop() -> None: ...

    noop.delay_many([() for _ in range(5)])
    jobs = sorted(_claim(conn, 5), key=lambda job: job.id)
    outcomes: list[Outcome] = [
        Succeeded(jobs[0], '"fine"'),
        Succeeded(jobs[1], '"\ud83d"'),
        Failed(jobs[2], simple_error("ValueError", "an ordinary failure")),
        Failed(jobs[3], {"type": "ValueError", "message": object(), "traceback": None}),
        Succeeded(jobs[4], "[1,2]"),
    ]

    async def complete() -> bool:
        completer = Completer(ReconnectingConnection(app, HOT_PATH_SETTINGS))
        running = asyncio.create_task(completer.run())
        for outcome in outcomes:
            completer.submit(outcome)
        try:
            drained = await completer.drain(15)
            await asyncio.wait_for(running, 15)  # it returns once drained; it must not raise
            return drained
        finally:
            running.cancel()
            await completer.close()

    assert asyncio.run(complete())
    with conn.cursor(row_factory=dict_row) as cur:
        rows = {
            row["id"]: row
            for row in cur.execute(
                "SELECT id, status::text AS status, result, error FROM pgqueue_all_jobs"
            ).fetchall()
        }
    assert rows[jobs[0].id]["status"] == "succeeded"
    assert rows[jobs[0].id]["result"] == "fine"
    assert rows[jobs[2].id]["status"] == "failed"
    assert rows[jobs[2].id]["error"]["message"] == "an ordinary failure"
    assert rows[jobs[4].id]["result"] == [1, 2]
    for bad in (jobs[1], jobs[3]):
        assert rows[bad.id]["status"] == "failed"
        assert rows[bad.id]["error"]["type"] == "OutcomeNotStored"
        assert "could not be stored" in rows[bad.id]["error"]["message"]
