"""Enqueueing on the caller's connection: psycopg and SQLAlchemy, sync and async."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import pgqueue
from pgqueue import migrate
from tests.conftest import WorkerThread

StartWorker = Callable[..., WorkerThread]


def _count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM pgqueue_all_jobs").fetchone()
        assert row is not None
        return int(row[0])


@pytest.fixture
def engine(dsn: str) -> Iterator[sa.Engine]:
    engine = migrate.engine_for(dsn)
    yield engine
    engine.dispose()


@pytest.fixture
def echo(app: pgqueue.App) -> pgqueue.Task[Any, Any]:
    @app.task
    def echo(value: Any) -> Any:
        return value

    return echo


# -- SQLAlchemy, sync -------------------------------------------------------------------


def test_sqlalchemy_connection_commit_makes_the_job_run(
    app: pgqueue.App,
    engine: sa.Engine,
    echo: pgqueue.Task[Any, Any],
    start_worker: StartWorker,
) -> None:
    start_worker(app)
    with engine.connect() as connection:
        connection.execute(sa.text("CREATE TABLE orders (id int)"))
        connection.execute(sa.text("INSERT INTO orders VALUES (7)"))
        job = echo.apply_async(args=({"order": 7},), connection=connection)
        assert job.status is pgqueue.JobStatus.QUEUED
        connection.commit()
    assert job.wait(timeout=15) == {"order": 7}


def test_sqlalchemy_connection_rollback_leaves_nothing(
    dsn: str, engine: sa.Engine, echo: pgqueue.Task[Any, Any]
) -> None:
    with engine.connect() as connection:
        echo.apply_async(args=(1,), connection=connection)
        connection.rollback()
    assert _count(dsn) == 0


def test_sqlalchemy_session_commit_makes_the_job_run(
    app: pgqueue.App,
    engine: sa.Engine,
    echo: pgqueue.Task[Any, Any],
    start_worker: StartWorker,
) -> None:
    start_worker(app)
    with Session(engine) as session:
        job = echo.apply_async(args=("from a session",), connection=session)
        session.commit()
    assert job.wait(timeout=15) == "from a session"


def test_sqlalchemy_session_rollback_leaves_nothing(
    dsn: str, engine: sa.Engine, echo: pgqueue.Task[Any, Any]
) -> None:
    with Session(engine) as session:
        echo.apply_async(args=(1,), connection=session)
        session.rollback()
    assert _count(dsn) == 0


# -- async ------------------------------------------------------------------------------


def test_psycopg_async_connection_commit_makes_the_job_run(
    app: pgqueue.App, dsn: str, echo: pgqueue.Task[Any, Any], start_worker: StartWorker
) -> None:
    start_worker(app)

    async def scenario() -> Any:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            job = await echo.aapply_async(args=("async",), connection=conn)
            await conn.commit()
        found = await app.aget_job(job.id)
        assert found.task_name == echo.name
        return await job.wait_async(timeout=15)

    assert asyncio.run(scenario()) == "async"


def test_psycopg_async_connection_rollback_leaves_nothing(
    dsn: str, echo: pgqueue.Task[Any, Any]
) -> None:
    async def scenario() -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            await echo.aapply_async(args=(1,), connection=conn)
            await conn.rollback()

    asyncio.run(scenario())
    assert _count(dsn) == 0


def test_adelay_commits_and_wait_async_returns_the_result(
    app: pgqueue.App, echo: pgqueue.Task[Any, Any], start_worker: StartWorker
) -> None:
    start_worker(app)

    async def scenario() -> Any:
        job = await echo.adelay([1, 2])
        return await job.wait_async(timeout=15)

    assert asyncio.run(scenario()) == [1, 2]


def _async_engine(dsn: str) -> Any:
    import greenlet  # noqa: F401  # a dev dependency: a missing one must fail, not skip
    from sqlalchemy.ext.asyncio import create_async_engine

    return create_async_engine(
        "postgresql+psycopg_async://",
        async_creator=lambda: psycopg.AsyncConnection.connect(dsn),
        poolclass=sa.NullPool,
    )


@pytest.mark.parametrize("commit", [True, False])
def test_sqlalchemy_async_connection(
    app: pgqueue.App,
    dsn: str,
    echo: pgqueue.Task[Any, Any],
    start_worker: StartWorker,
    commit: bool,
) -> None:
    engine = _async_engine(dsn)
    start_worker(app)

    async def scenario() -> Any:
        try:
            async with engine.connect() as connection:
                job = await echo.aapply_async(args=("sa-async",), connection=connection)
                if not commit:
                    await connection.rollback()
                    return None
                await connection.commit()
            return await job.wait_async(timeout=15)
        finally:
            await engine.dispose()

    assert asyncio.run(scenario()) == ("sa-async" if commit else None)
    assert _count(dsn) == (1 if commit else 0)


@pytest.mark.parametrize("commit", [True, False])
def test_sqlalchemy_async_session(
    app: pgqueue.App,
    dsn: str,
    echo: pgqueue.Task[Any, Any],
    start_worker: StartWorker,
    commit: bool,
) -> None:
    engine = _async_engine(dsn)
    from sqlalchemy.ext.asyncio import AsyncSession

    start_worker(app)

    async def scenario() -> Any:
        try:
            async with AsyncSession(engine) as session:
                job = await echo.aapply_async(args=("session-async",), connection=session)
                if not commit:
                    await session.rollback()
                    return None
                await session.commit()
            return await job.wait_async(timeout=15)
        finally:
            await engine.dispose()

    assert asyncio.run(scenario()) == ("session-async" if commit else None)
    assert _count(dsn) == (1 if commit else 0)


# -- wrong connection kinds -------------------------------------------------------------


def test_sync_connection_given_to_aapply_async_raises_type_error(
    dsn: str, engine: sa.Engine, echo: pgqueue.Task[Any, Any]
) -> None:
    async def scenario(connection: Any) -> None:
        with pytest.raises(TypeError, match="this connection is sync"):
            await echo.aapply_async(connection=connection)

    with psycopg.connect(dsn) as conn:
        asyncio.run(scenario(conn))
    with Session(engine) as session:
        asyncio.run(scenario(session))
    with engine.connect() as connection:
        asyncio.run(scenario(connection))
    assert _count(dsn) == 0


def test_async_connection_given_to_apply_async_raises_type_error(
    dsn: str, echo: pgqueue.Task[Any, Any]
) -> None:
    async def scenario() -> None:
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            with pytest.raises(TypeError, match="this connection is async"):
                echo.apply_async(connection=conn)
        engine = _async_engine(dsn)
        from sqlalchemy.ext.asyncio import AsyncSession

        try:
            async with AsyncSession(engine) as session:
                with pytest.raises(TypeError, match="this connection is async"):
                    echo.apply_async(connection=session)
        finally:
            await engine.dispose()

    asyncio.run(scenario())
    assert _count(dsn) == 0


def test_something_that_is_not_a_connection_raises_type_error(
    echo: pgqueue.Task[Any, Any],
) -> None:
    with pytest.raises(TypeError, match="connection= takes a psycopg 3 Connection"):
        echo.apply_async(connection="postgresql://not-a-connection")


# -- no database ------------------------------------------------------------------------


def test_enqueue_without_a_reachable_database_raises_database_unavailable() -> None:
    app = pgqueue.App(dsn="postgresql://postgres@127.0.0.1:1/x")

    @app.task
    def unreachable() -> None: ...

    with pytest.raises(pgqueue.DatabaseUnavailable, match="could not connect"):
        unreachable.delay()

    async def scenario() -> None:
        with pytest.raises(pgqueue.DatabaseUnavailable):
            await unreachable.adelay()

    asyncio.run(scenario())


# -- the shared async connection runs no transaction block ------------------------------


def test_adelay_beside_a_failing_acancel_keeps_its_job(
    app: pgqueue.App, echo: pgqueue.Task[Any, Any]
) -> None:
    """acancel of an unknown job fails; an adelay() running beside it on the same event
    loop (so on the same shared connection) must not vanish with it."""

    async def scenario() -> int:
        await echo.adelay("warm up the shared connection")
        cancelled, job = await asyncio.gather(
            app.acancel(10**12), echo.adelay("beside"), return_exceptions=True
        )
        assert isinstance(cancelled, pgqueue.JobNotFound)
        assert isinstance(job, pgqueue.Job)
        return job.id

    job_id = asyncio.run(scenario())
    assert app.get_job(job_id).args == ["beside"]


def test_adelay_beside_an_interrupted_adelay_many_keeps_its_job(
    app: pgqueue.App, echo: pgqueue.Task[Any, Any]
) -> None:
    async def scenario() -> int:
        await echo.adelay("warm up the shared connection")
        bulk = asyncio.ensure_future(echo.adelay_many([(i,) for i in range(20_000)]))
        await asyncio.sleep(0)  # one turn of the loop: the bulk starts first
        job = await echo.adelay("beside")
        bulk.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await bulk
        return job.id

    job_id = asyncio.run(scenario())
    assert app.get_job(job_id).args == ["beside"]


# -- resources --------------------------------------------------------------------------


@pytest.fixture
def many_open_files() -> Iterator[None]:
    """Enough open files that the next socket gets a descriptor above select()'s 1024."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 1200
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the hard limit on open files ({hard}) is below {wanted}")
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    fds: list[int] = []
    try:
        while not fds or fds[-1] < 1100:
            fds.append(os.open(os.devnull, os.O_RDONLY))
        yield
    finally:
        for fd in fds:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _backend_pids(dsn: str) -> set[int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = 'pgqueue'"
        ).fetchall()
    return {row[0] for row in rows}


def test_delay_reuses_its_connection_when_its_socket_is_above_fd_1024(
    app: pgqueue.App, dsn: str, echo: pgqueue.Task[Any, Any], many_open_files: None
) -> None:
    echo.delay(1)
    assert app._shared_connection().pgconn.socket > 1024
    first = _backend_pids(dsn)
    for n in range(5):
        echo.delay(n)
    assert _backend_pids(dsn) == first, "delay() opened a new connection"

    async def scenario() -> set[int]:
        await echo.adelay(1)
        before = _backend_pids(dsn)
        for n in range(5):
            await echo.adelay(n)
        assert _backend_pids(dsn) == before, "adelay() opened a new connection"
        await app.aclose()
        return before

    asyncio.run(scenario())


def test_the_shared_async_connection_is_not_replaced_while_a_statement_runs_on_it(
    app: pgqueue.App,
) -> None:
    """A task asking for the loop's shared connection while another task's statement is in
    flight on it (its reply already waiting on the socket) gets the same connection, not a
    closed one: closing it under the other task crashed the process."""
    import select

    async def scenario() -> None:
        conn = await app._ashared_connection()
        async with conn.lock:  # what a running execute() holds
            conn.pgconn.send_query(b"SELECT 1")
            deadline = time.monotonic() + 10
            poller = select.poll()
            poller.register(conn.pgconn.socket, select.POLLIN)
            while not poller.poll(10):  # the reply has arrived, unread
                assert time.monotonic() < deadline, "no reply from the server"
            again = await app._ashared_connection()
            assert again is conn and not conn.closed
            conn.pgconn.consume_input()
            while conn.pgconn.is_busy():
                poller.poll(10)
                conn.pgconn.consume_input()
            while conn.pgconn.get_result() is not None:
                pass
        cur = await (await app._ashared_connection()).execute("SELECT 2")
        assert await cur.fetchone() == (2,)

    asyncio.run(scenario())
