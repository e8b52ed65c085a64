"""Eager mode: delay() runs the task at once, in the caller's stack, with no database write."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue.testing import EagerJob, eager, enqueued


def test_delay_runs_the_task_at_once_and_writes_nothing(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    seen: list[Any] = []

    @app.task
    def add(a: int, b: int) -> tuple[int, int, int]:
        job = pgqueue.current_job()
        assert job is not None
        seen.append((job.attempt, job.task_name))
        return (a, b, a + b)

    with eager(app):
        job = add.apply_async(args=(2, 3), countdown=3600)
    assert isinstance(job, EagerJob)
    assert job.status is pgqueue.JobStatus.SUCCEEDED
    assert job.id < 0
    assert job.wait(timeout=1) == [2, 3, 5]  # through JSON, as with a worker
    assert job.refresh() is job
    assert seen == [(1, add.name)]
    assert conn.execute("SELECT count(*) FROM pgqueue_all_jobs").fetchone() == (0,)
    # Outside the block, delay() enqueues again.
    add.delay(1, 1)
    assert len(enqueued(app)) == 1


def test_failures_propagate_unless_asked_otherwise(app: pgqueue.App) -> None:
    @app.task
    def boom() -> None:
        raise KeyError("nope")

    with eager(app), pytest.raises(KeyError, match="nope"):
        boom.delay()
    with eager(app, propagate=False):
        job = boom.delay()
    assert job.status is pgqueue.JobStatus.FAILED
    assert job.error is not None and job.error["type"] == "KeyError"
    with pytest.raises(pgqueue.JobFailed, match="nope"):
        job.wait()


def test_arguments_that_json_cannot_hold_are_refused_as_by_delay(app: pgqueue.App) -> None:
    @app.task
    def takes(value: Any) -> None: ...

    @app.task
    def gives() -> object:
        return object()

    with eager(app):
        with pytest.raises(TypeError):
            takes.delay({1, 2})
        with pytest.raises(TypeError, match="return value"):
            gives.delay()


def test_async_tasks_run_from_sync_and_async_callers(app: pgqueue.App) -> None:
    @app.task
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return 2 * x

    @app.task
    def triple(x: int) -> int:
        return 3 * x

    with eager(app):
        assert double.delay(2).wait() == 4

        async def main() -> list[Any]:
            return [(await double.adelay(5)).result, (await triple.adelay(5)).result]

        assert asyncio.run(main()) == [10, 15]


def test_jobs_enqueued_by_an_eager_task_run_inside_its_call(app: pgqueue.App) -> None:
    order: list[str] = []

    @app.task
    def child() -> None:
        order.append("child")

    @app.task
    def parent() -> None:
        child.delay()
        order.append("parent")

    with eager(app):
        parent.delay()
    assert order == ["child", "parent"]


def test_transactional_tasks_are_refused_with_what_to_use(app: pgqueue.App) -> None:
    @app.task(transactional=True)
    def charge() -> None: ...

    with eager(app), pytest.raises(pgqueue.ConfigurationError, match=r"drain\(\)"):
        charge.delay()


def test_headers_reach_the_task_as_with_a_worker(app: pgqueue.App) -> None:
    @app.task
    def tagged() -> dict[str, Any]:
        job = pgqueue.current_job()
        assert job is not None
        return job.headers

    with eager(app):
        job = tagged.apply_async(headers={"tenant": "acme"})
    assert job.result == {"tenant": "acme"}
    assert job.headers == {"tenant": "acme"}
