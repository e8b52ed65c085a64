"""Job headers and the hooks around enqueue and attempts (pgqueue.hooks): what they see, where
they run, and that a broken hook never costs a job."""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue import admin
from pgqueue.hooks import Attempt, Enqueueing
from pgqueue.testing import drain
from tests.conftest import WorkerThread

StartWorker = Callable[..., WorkerThread]

# What an attempt wrapper makes current, for the task to see.
marker: contextvars.ContextVar[str | None] = contextvars.ContextVar("marker", default=None)


def test_headers_travel_with_the_job_to_the_finished_table_and_back(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    seen: list[dict[str, Any]] = []

    @app.task(max_attempts=1)
    def fails() -> None:
        job = pgqueue.current_job()
        assert job is not None
        seen.append(job.headers)
        raise RuntimeError("boom")

    job = fails.apply_async(headers={"tenant": "acme", "n": [1, 2]})
    assert job.headers == {"tenant": "acme", "n": [1, 2]}
    drain(app)
    assert app.get_job(job.id).headers == {"tenant": "acme", "n": [1, 2]}
    # An operator's retry moves the row back to the hot table, headers included.
    admin.retry(conn, [job.id])
    drain(app)
    assert seen == [{"tenant": "acme", "n": [1, 2]}] * 2


def test_jobs_without_headers_store_null(app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    @app.task
    def plain(n: int) -> int:
        job = pgqueue.current_job()
        assert job is not None and job.headers == {}
        return n

    ids = [plain.delay(1).id, *plain.delay_many([(2,), (3,)])]
    rows = conn.execute("SELECT headers FROM pgqueue_jobs WHERE id = ANY(%s)", (ids,)).fetchall()
    assert rows == [(None,)] * 3
    assert [ran.status for ran in drain(app)] == ["succeeded"] * 3


def test_delay_many_gives_every_job_the_same_headers(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    @app.task
    def each(n: int) -> None:
        return None

    ids = each.delay_many([(1,), (2,)], headers={"batch": "a\tb\\c"})
    rows = conn.execute("SELECT headers FROM pgqueue_jobs WHERE id = ANY(%s)", (ids,)).fetchall()
    assert rows == [({"batch": "a\tb\\c"},)] * 2


@pytest.mark.parametrize(
    "headers, message",
    [
        (["traceparent"], "headers must be a dict"),
        ({1: "x"}, "header names must be strings"),
        ({"when": object()}, "job headers cannot be stored as JSON"),
    ],
)
def test_bad_headers_are_refused_before_anything_is_written(
    app: pgqueue.App, conn: psycopg.Connection[Any], headers: Any, message: str
) -> None:
    @app.task
    def noop() -> None:
        return None

    with pytest.raises(TypeError, match=message):
        noop.apply_async(headers=headers)
    assert conn.execute("SELECT count(*) FROM pgqueue_jobs").fetchone() == (0,)


def test_an_enqueue_hook_adds_headers_and_sees_the_job_ids(app: pgqueue.App) -> None:
    seen: list[Enqueueing] = []

    @contextlib.contextmanager
    def stamp(enqueueing: Enqueueing) -> Iterator[None]:
        enqueueing.headers["origin"] = "web-1"
        seen.append(enqueueing)
        yield

    @app.task(queue="mail")
    def send(n: int) -> None:
        return None

    app.add_enqueue_hook(stamp)
    app.add_enqueue_hook(stamp)  # once is enough
    job = send.apply_async(args=(1,), headers={"tenant": "acme"})
    ids = send.delay_many([(2,), (3,)])
    assert job.headers == {"tenant": "acme", "origin": "web-1"}
    assert app.get_job(ids[0]).headers == {"origin": "web-1"}
    assert [(e.task_name, e.queue, e.count, e.job_ids) for e in seen] == [
        (send.name, "mail", 1, [job.id]),
        (send.name, "mail", 2, ids),
    ]
    assert app.remove_enqueue_hook(stamp) is True
    assert send.delay(4).headers == {}


def test_an_enqueue_hook_sees_the_error_that_stopped_the_enqueue(app: pgqueue.App) -> None:
    errors: list[type[BaseException] | None] = []

    class Watch:
        def __init__(self, enqueueing: Enqueueing) -> None:
            pass

        def __enter__(self) -> None:
            return None

        def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
            errors.append(exc_type)
            return True  # a hook cannot swallow the error

    @app.task
    def noop() -> None:
        return None

    app.add_enqueue_hook(Watch)
    with psycopg.connect(app.dsn) as caller:
        with contextlib.suppress(psycopg.errors.DivisionByZero):
            caller.execute("SELECT 1/0")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            noop.apply_async(connection=caller)
    assert errors == [psycopg.errors.InFailedSqlTransaction]


def test_broken_hooks_are_logged_and_never_cost_a_job(
    app: pgqueue.App, caplog: pytest.LogCaptureFixture
) -> None:
    def broken_on_entry(_: Any) -> Any:
        raise RuntimeError("hook bug")

    @contextlib.contextmanager
    def broken_on_exit(_: Any) -> Iterator[None]:
        yield
        raise RuntimeError("exit bug")

    @contextlib.contextmanager
    def unstorable(enqueueing: Enqueueing) -> Iterator[None]:
        enqueueing.headers["span"] = object()
        yield

    @app.task
    def still_runs() -> str:
        return "ran"

    for hook in (broken_on_entry, broken_on_exit, unstorable):
        app.add_enqueue_hook(hook)
    app.add_attempt_wrapper(broken_on_entry)
    app.add_attempt_wrapper(broken_on_exit)
    job = still_runs.delay()
    assert job.headers == {}
    assert [ran.status for ran in drain(app)] == ["succeeded"]
    assert job.refresh().result == "ran"
    logged = caplog.text
    assert "enqueue hook" in logged and "attempt wrapper" in logged
    assert "cannot be stored" in logged


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_an_attempt_wrapper_runs_where_the_task_runs(
    app: pgqueue.App, start_worker: StartWorker, kind: str
) -> None:
    attempts: list[tuple[int, str | None, str | None]] = []

    @contextlib.contextmanager
    def mark(attempt: Attempt) -> Iterator[None]:
        token = marker.set(f"job {attempt.job.id} on {threading.current_thread().name}")
        try:
            yield
        finally:
            marker.reset(token)
            attempts.append((attempt.job.attempt, attempt.outcome, attempt.job.headers.get("h")))

    if kind == "sync":

        @app.task(max_attempts=2, autoretry_for=(KeyError,), retry_backoff=False)
        def task() -> str | None:
            job = pgqueue.current_job()
            assert job is not None
            if job.attempt == 1:
                raise KeyError("first")
            return marker.get()

    else:

        @app.task(max_attempts=2, autoretry_for=(KeyError,), retry_backoff=False)
        async def task() -> str | None:
            job = pgqueue.current_job()
            assert job is not None
            if job.attempt == 1:
                raise KeyError("first")
            return marker.get()

    app.add_attempt_wrapper(mark)
    start_worker(app)
    job = task.apply_async(headers={"h": "v"})
    value = job.wait(timeout=30)
    assert value is not None and value.startswith(f"job {job.id} on ")
    # A sync task on a thread of the pool, with the wrapper; an async one on the event loop.
    assert ("pgqueue-task" in value) == (kind == "sync")
    assert attempts == [(1, "queued", "v"), (2, "succeeded", "v")]
