"""Workflows against real workers: chains, groups, chords, callbacks, failure and cancellation."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import pgqueue
from tests.conftest import WorkerThread, wait_until

StartWorker = Callable[..., WorkerThread]


class Tasks:
    """A few tasks on one app, recording the calls of the callbacks."""

    def __init__(self, app: pgqueue.App) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.lock = threading.Lock()
        calls, lock = self.calls, self.lock

        def record(name: str, *args: Any) -> None:
            with lock:
                calls.append((name, args))

        @app.task
        def add(a: int, b: int) -> int:
            return a + b

        @app.task
        def mul(a: int, b: int) -> int:
            return a * b

        @app.task
        def total(values: list[int], extra: int = 0) -> int:
            record("total", values)
            return sum(values) + extra

        @app.task
        def echo(*args: Any) -> list[Any]:
            record("echo", *args)
            return list(args)

        @app.task(max_attempts=1)
        def explode(*args: Any) -> None:
            raise ValueError("boom")

        @app.task
        def on_error(job_id: int, error: dict[str, Any], *args: Any) -> None:
            record("on_error", job_id, error, *args)

        self.add, self.mul, self.total, self.echo = add, mul, total, echo
        self.explode, self.on_error = explode, on_error

    def calls_of(self, name: str) -> list[tuple[Any, ...]]:
        with self.lock:
            return [args for called, args in self.calls if called == name]


@pytest.fixture
def tasks(app: pgqueue.App) -> Tasks:
    return Tasks(app)


def test_chain_passes_each_result_to_the_next_step(
    app: pgqueue.App, tasks: Tasks, start_worker: StartWorker
) -> None:
    start_worker(app, concurrency=2)
    flow = pgqueue.chain(tasks.add.s(1, 2), tasks.mul.s(10), tasks.add.s(5)).apply_async()
    assert flow.wait(timeout=15) == 35  # (1 + 2) * 10 + 5
    assert flow.status is pgqueue.WorkflowStatus.SUCCEEDED
    assert [job.args for job in flow.jobs] == [[1, 2], [3, 10], [30, 5]]
    assert app.get_workflow(flow.id).status is pgqueue.WorkflowStatus.SUCCEEDED


def test_pipe_operator_and_immutable_signature(
    app: pgqueue.App, tasks: Tasks, start_worker: StartWorker
) -> None:
    start_worker(app)
    flow = (tasks.add.s(1, 2) | tasks.add.si(100, 1) | tasks.mul.s(2)).delay()
    assert flow.wait(timeout=15) == 202


def test_group_results_come_back_in_order(
    app: pgqueue.App, tasks: Tasks, start_worker: StartWorker
) -> None:
    start_worker(app, concurrency=4)
    flow = pgqueue.group(tasks.add.s(i, i) for i in range(6)).apply_async()
    assert flow.wait(timeout=15) == [0, 2, 4, 6, 8, 10]


def test_chord_callback_gets_results_in_header_order(
    app: pgqueue.App, tasks: Tasks, start_worker: StartWorker
) -> None:
    start_worker(app, concurrency=4)
    header = [tasks.echo.s(i) for i in range(8)]
    flow = pgqueue.chord(header, tasks.echo.s("done")).apply_async()
    result = flow.wait(timeout=15)
    assert result == [[[i] for i in range(8)], "done"]
    assert len(tasks.calls_of("echo")) == 9


def test_nesting_chain_in_group_group_in_chain_chord_of_chains(
    app: pgqueue.App, tasks: Tasks, start_worker: StartWorker
) -> None:
    start_worker(app, concurrency=4)
    t = tasks
    # A group inside a chain: each member gets the step before's result; the next step gets
    # the group's list.
    flow = pgqueue.chain(
        t.add.s(1, 1), pgqueue.group(t.mul.s(10), t.add.s(5)), t.total.s()
    ).apply_async()
    assert flow.wait(timeout=15) == 27  # [20, 7]
    # A chain inside a group.
    flow = pgqueue.group(pgqueue.chain(t.add.s(1, 2), t.mul.s(3)), t.add.s(0, 1)).apply_async()
    assert flow.wait(timeout=15) == [9, 1]
    # A chord whose header holds chains, itself in a chain.
    chord = pgqueue.chord([pgqueue.chain(t.add.s(i, 0), t.mul.s(2)) for i in range(4)], t.total.s())
    flow = (chord | t.mul.s(10)).apply_async()
    assert flow.wait(timeout=15) == 120  # (0 + 2 + 4 + 6) * 10
    tree = app.get_workflow(flow.id).tree
    assert tree["shape"]["type"] == "chain"
    assert tree["shape"]["children"][0]["type"] == "chord"


def test_link_runs_after_success_with_the_result(
    app: pgqueue.App, tasks: Tasks, start_worker: StartWorker
) -> None:
    start_worker(app)
    job = tasks.add.apply_async((2, 3), link=tasks.echo.s("linked"))
    assert job.wait(timeout=15) == 5
    assert job.workflow_id is not None
    flow = app.get_workflow(job.workflow_id)
    flow.wait(timeout=15)
    assert tasks.calls_of("echo") == [(5, "linked")]


def test_link_error_runs_once_with_job_id_and_error_and_dependents_are_cancelled(
    app: pgqueue.App, tasks: Tasks, start_worker: StartWorker
) -> None:
    start_worker(app, concurrency=2)
    t = tasks
    flow = pgqueue.chain(t.add.s(1, 1), t.explode.s(), t.add.s(1), t.mul.s(2)).apply_async(
        link_error=t.on_error.s("ctx")
    )
    with pytest.raises(pgqueue.JobFailed) as info:
        flow.wait(timeout=15)
    failed = flow.jobs[1]
    assert info.value.job_id == failed.id
    assert info.value.exc_type == "ValueError"
    assert [job.status.value for job in flow.jobs] == [
        "succeeded",
        "failed",
        "cancelled",
        "cancelled",
    ]
    for job in flow.jobs[2:]:
        assert job.error is not None
        assert job.error["type"] == "DependencyFailed"
        assert f"step {failed.id}" in job.error["message"]
        assert "tests" in job.error["message"] and "explode" in job.error["message"]
    assert flow.status is pgqueue.WorkflowStatus.FAILED
    wait_until(lambda: t.calls_of("on_error"), what="link_error ran")
    app.wait_all(flow.refresh().link_error_jobs, timeout=15)
    (call,) = t.calls_of("on_error")
    assert call[0] == failed.id and call[1]["type"] == "ValueError" and call[2] == "ctx"


def test_chord_member_failure_cancels_the_callback_and_link_error_runs_once(
    app: pgqueue.App, tasks: Tasks, start_worker: StartWorker
) -> None:
    start_worker(app, concurrency=4)
    t = tasks
    header = [t.add.s(1, 1), t.explode.s(), t.explode.s(), t.add.s(2, 2)]
    flow = pgqueue.chord(header, t.total.s()).apply_async(link_error=t.on_error.s())
    with pytest.raises(pgqueue.JobFailed):
        flow.wait(timeout=15)
    callback = flow.jobs[-1]
    assert callback.status is pgqueue.JobStatus.CANCELLED
    app.wait_all(flow.link_error_jobs, timeout=15)
    assert len(t.calls_of("on_error")) == 1
    assert t.calls_of("total") == []


def test_link_error_is_not_run_when_everything_succeeds(
    app: pgqueue.App, tasks: Tasks, start_worker: StartWorker
) -> None:
    start_worker(app)
    flow = pgqueue.chain(tasks.add.s(1, 1), tasks.add.s(1)).apply_async(
        link_error=tasks.on_error.s()
    )
    assert flow.wait(timeout=15) == 3
    (errback,) = flow.refresh().link_error_jobs
    assert errback.status is pgqueue.JobStatus.CANCELLED
    assert errback.error is not None and errback.error["type"] == "NotNeeded"
    assert tasks.calls_of("on_error") == []


def test_retries_of_a_step_are_not_failures(app: pgqueue.App, start_worker: StartWorker) -> None:
    attempts: list[int] = []

    @app.task(max_attempts=3)
    def flaky(x: int) -> int:
        attempts.append(x)
        if len(attempts) < 3:
            raise pgqueue.Retry(countdown=0)
        return x + 1

    @app.task
    def double(x: int) -> int:
        return x * 2

    start_worker(app)
    flow = pgqueue.chain(flaky.s(1), double.s()).apply_async()
    assert flow.wait(timeout=15) == 4
    assert flow.jobs[0].attempts == 3


def test_cancel_stops_every_step_that_has_not_started(
    app: pgqueue.App, tasks: Tasks, start_worker: StartWorker
) -> None:
    release = threading.Event()

    @app.task
    def gate() -> int:
        release.wait(15)
        return 1

    start_worker(app, concurrency=2)
    flow = pgqueue.chain(gate.s(), tasks.add.s(1), tasks.add.s(1)).apply_async(
        link_error=tasks.on_error.s()
    )
    wait_until(lambda: app.get_job(flow.jobs[0].id).status is pgqueue.JobStatus.RUNNING)
    assert flow.cancel() == 3  # two ended, the running one asked to stop
    assert [job.status.value for job in flow.jobs] == ["running", "cancelled", "cancelled"]
    release.set()
    with pytest.raises(pgqueue.JobCancelled):
        flow.wait(timeout=15)
    assert flow.status is pgqueue.WorkflowStatus.CANCELLED
    app.wait_all(flow.link_error_jobs, timeout=15)
    assert len(tasks.calls_of("on_error")) == 1


def test_connection_rollback_leaves_nothing_and_commit_writes_everything(
    app: pgqueue.App, tasks: Tasks, dsn: str, start_worker: StartWorker
) -> None:
    t = tasks
    flow_of = pgqueue.chord([t.add.s(i, 1) for i in range(3)], t.total.s())
    with psycopg.connect(dsn) as conn:
        flow = flow_of.apply_async(connection=conn, link_error=t.on_error.s())
        conn.rollback()
    with psycopg.connect(dsn) as conn:
        for table in ("pgqueue_jobs", "pgqueue_workflows", "pgqueue_dependencies"):
            assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    with pytest.raises(pgqueue.WorkflowNotFound):
        app.get_workflow(flow.id)
    with psycopg.connect(dsn) as conn:
        flow = flow_of.apply_async(connection=conn)
        conn.commit()
    start_worker(app, concurrency=2)
    assert flow.wait(timeout=15) == 6


def test_aapply_async_in_an_async_transaction(
    app: pgqueue.App, tasks: Tasks, dsn: str, start_worker: StartWorker
) -> None:
    import asyncio

    async def main() -> Any:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            flow = await pgqueue.chain(tasks.add.s(1, 2), tasks.mul.s(3)).aapply_async(
                connection=conn
            )
            await conn.commit()
        result = await flow.wait_async(timeout=15)
        again = await app.aget_workflow(flow.id)
        await app.aclose()
        return result, again.status

    start_worker(app)
    assert asyncio.run(main()) == (9, pgqueue.WorkflowStatus.SUCCEEDED)


def test_chord_callback_runs_exactly_once_when_members_finish_at_once_on_several_workers(
    app: pgqueue.App, dsn: str, start_worker: StartWorker
) -> None:
    started = threading.Barrier(parties=6, timeout=15)
    callback_runs: list[list[int]] = []
    lock = threading.Lock()

    @app.task
    def member(i: int) -> int:
        with contextlib.suppress(threading.BrokenBarrierError):
            started.wait()  # six members running at once, finishing together
        return i

    @app.task
    def collect(values: list[int]) -> int:
        with lock:
            callback_runs.append(values)
        return len(values)

    for _ in range(3):
        start_worker(app, concurrency=2)
    flows = [
        pgqueue.chord([member.s(i) for i in range(6)], collect.s()).apply_async() for _ in range(10)
    ]
    for flow in flows:
        assert flow.wait(timeout=30) == 6
    assert callback_runs == [list(range(6))] * 10


def test_bad_input_is_refused_before_anything_is_written(
    app: pgqueue.App, tasks: Tasks, conn: psycopg.Connection[Any]
) -> None:
    t = tasks
    with pytest.raises(pgqueue.UnknownTask, match="external=True"):
        app.signature("no.such.task")
    other = pgqueue.App(app.dsn)

    @other.task(name="only.on.other")
    def only_on_other() -> None: ...

    with pytest.raises(pgqueue.UnknownTask, match="not registered"):
        pgqueue.chain(t.add.s(1, 2), only_on_other.si()).apply_async()
    with pytest.raises(pgqueue.WorkflowError, match="header is empty"):
        pgqueue.chord([], t.total.s())
    with pytest.raises(pgqueue.WorkflowError, match="at least one"):
        pgqueue.group([])
    looped = pgqueue.chain(t.add.s(1, 2))
    looped.tasks = (*looped.tasks, looped)
    with pytest.raises(pgqueue.WorkflowError, match="cycle"):
        looped.apply_async()
    with pytest.raises(
        TypeError, match=r"echo: task arguments cannot be stored as JSON: args\[0\] is a object"
    ):
        pgqueue.chord([t.add.s(1, 2)], t.echo.s(object())).apply_async()
    with pytest.raises(
        TypeError,
        match=r"link_error .*on_error: task arguments cannot be stored as JSON: args\[0\] is a set",
    ):
        t.add.apply_async((1, 2), link_error=t.on_error.s({1, 2}))
    with pytest.raises(TypeError, match="unknown signature option"):
        t.add.s(1, 2).set(colour="red")
    for table in ("pgqueue_jobs", "pgqueue_workflows", "pgqueue_dependencies"):
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)
    # A task only the workers know, by name.
    flow = app.signature("worker.only", (1,), external=True, queue="elsewhere").delay()
    assert flow.jobs[0].queue == "elsewhere"
    other.close()


def test_testing_drain_runs_a_workflow_round_by_round(app: pgqueue.App, tasks: Tasks) -> None:
    from pgqueue.testing import drain

    t = tasks
    flow = pgqueue.chord([t.add.s(i, i) for i in range(3)], t.total.s()).apply_async(
        link=t.mul.s(10)
    )
    ran = drain(app)
    assert [r.status for r in ran] == ["succeeded"] * 5
    assert flow.wait(timeout=5) == 6
    assert flow.jobs[-1].result == 60


@pytest.mark.parametrize("form", ["sqlalchemy-connection", "sqlalchemy-session"])
def test_a_workflow_joins_a_sqlalchemy_transaction(
    app: pgqueue.App, tasks: Tasks, dsn: str, form: str, conn: psycopg.Connection[Any]
) -> None:
    from sqlalchemy.orm import Session

    from pgqueue import migrate

    engine = migrate.engine_for(dsn)
    flow_of = pgqueue.chain(tasks.add.s(1, 2), tasks.mul.s(3))
    try:
        for commit in (False, True):
            with engine.connect() if form == "sqlalchemy-connection" else Session(engine) as c:
                flow = flow_of.apply_async(connection=c)
                if commit:
                    c.commit()
            found = conn.execute(
                "SELECT count(*) FROM pgqueue_jobs WHERE workflow_id = %s", (flow.id,)
            ).fetchone()
            assert found == ((2,) if commit else (0,))
    finally:
        engine.dispose()


def test_enqueue_hooks_see_each_step(app: pgqueue.App, tasks: Tasks) -> None:
    seen: list[str] = []

    @contextlib.contextmanager
    def hook(enqueueing: Any) -> Any:
        seen.append(enqueueing.task_name)
        enqueueing.headers["trace"] = "t-1"
        yield
        assert len(enqueueing.job_ids) == 1

    app.add_enqueue_hook(hook)
    flow = pgqueue.chain(tasks.add.s(1, 2), tasks.mul.s(3)).apply_async()
    assert seen == [tasks.add.name, tasks.mul.name]
    assert [job.headers for job in flow.refresh().jobs] == [{"trace": "t-1"}] * 2
