"""`connection=`: the jobs join the caller's transaction as its owner sees it, whatever state
that transaction is in, or the call is refused; never a job that vanishes after its id was
returned."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from psycopg.rows import dict_row
from sqlalchemy.orm import Session

import pgqueue
from pgqueue import migrate
from tests.integration.test_connection_loss import _terminate

SYNC_FORMS = ["psycopg", "sqlalchemy-connection", "sqlalchemy-session"]
ASYNC_FORMS = ["psycopg", "sqlalchemy-connection", "sqlalchemy-session"]
# Where the caller's transaction stands when the job is enqueued: nothing run yet, a
# transaction committed already, or a transaction open with a statement run in it.
STATES = ["fresh", "after-commit", "begun"]


def _count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM pgqueue_all_jobs").fetchone()
        assert row is not None
        return int(row[0])


@pytest.fixture
def noop(app: pgqueue.App) -> pgqueue.Task[Any, Any]:
    @app.task
    def noop(n: int = 0) -> None: ...

    return noop


@contextmanager
def _sync_caller(form: str, dsn: str) -> Iterator[Any]:
    if form == "psycopg":
        with psycopg.connect(dsn) as conn:
            yield conn
        return
    engine = migrate.engine_for(dsn)
    try:
        if form == "sqlalchemy-connection":
            with engine.connect() as connection:
                yield connection
        else:
            with Session(engine) as session:
                yield session
    finally:
        engine.dispose()


def _prepare(connection: Any, state: str) -> None:
    run = (
        connection.execute
        if isinstance(connection, psycopg.Connection)
        else lambda sql: connection.execute(sa.text(sql))
    )
    if state in ("after-commit", "begun"):
        run("SELECT 1")
    if state == "after-commit":
        connection.commit()


def _enqueue(task: pgqueue.Task[Any, Any], op: str, connection: Any) -> list[int]:
    if op == "apply_async":
        return [task.apply_async(args=(1,), connection=connection).id]
    return task.delay_many([(i,) for i in range(3)], connection=connection)


@pytest.mark.parametrize("op", ["apply_async", "delay_many"])
@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("form", SYNC_FORMS)
def test_jobs_commit_with_the_callers_commit(
    app: pgqueue.App, dsn: str, noop: pgqueue.Task[Any, Any], form: str, state: str, op: str
) -> None:
    with _sync_caller(form, dsn) as connection:
        _prepare(connection, state)
        ids = _enqueue(noop, op, connection)
        assert _count(dsn) == 0, "visible before the caller committed"
        connection.commit()
    assert [app.get_job(i).status for i in ids] == [pgqueue.JobStatus.QUEUED] * len(ids)


@pytest.mark.parametrize("op", ["apply_async", "delay_many"])
@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("form", SYNC_FORMS)
def test_jobs_vanish_with_the_callers_rollback(
    dsn: str, noop: pgqueue.Task[Any, Any], form: str, state: str, op: str
) -> None:
    with _sync_caller(form, dsn) as connection:
        _prepare(connection, state)
        _enqueue(noop, op, connection)
        connection.rollback()
    assert _count(dsn) == 0


@asynccontextmanager
async def _async_caller(form: str, dsn: str) -> AsyncIterator[Any]:
    if form == "psycopg":
        async with await psycopg.AsyncConnection.connect(dsn) as conn:
            yield conn
        return
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    engine = create_async_engine(
        "postgresql+psycopg_async://",
        async_creator=lambda: psycopg.AsyncConnection.connect(dsn),
        poolclass=sa.NullPool,
    )
    try:
        if form == "sqlalchemy-connection":
            async with engine.connect() as connection:
                yield connection
        else:
            async with AsyncSession(engine) as session:
                yield session
    finally:
        await engine.dispose()


async def _aprepare(connection: Any, state: str) -> None:
    if state in ("after-commit", "begun"):
        if isinstance(connection, psycopg.AsyncConnection):
            await connection.execute("SELECT 1")
        else:
            await connection.execute(sa.text("SELECT 1"))
    if state == "after-commit":
        await connection.commit()


async def _aenqueue(task: pgqueue.Task[Any, Any], op: str, connection: Any) -> list[int]:
    if op == "apply_async":
        return [(await task.aapply_async(args=(1,), connection=connection)).id]
    return await task.adelay_many([(i,) for i in range(3)], connection=connection)


@pytest.mark.parametrize("commit", [True, False], ids=["commit", "rollback"])
@pytest.mark.parametrize("op", ["apply_async", "delay_many"])
@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("form", ASYNC_FORMS)
def test_async_jobs_follow_the_callers_transaction(
    dsn: str, noop: pgqueue.Task[Any, Any], form: str, state: str, op: str, commit: bool
) -> None:
    async def scenario() -> list[int]:
        async with _async_caller(form, dsn) as connection:
            await _aprepare(connection, state)
            ids = await _aenqueue(noop, op, connection)
            assert _count(dsn) == 0, "visible before the caller committed"
            await (connection.commit() if commit else connection.rollback())
        return ids

    ids = asyncio.run(scenario())
    assert _count(dsn) == (len(ids) if commit else 0)


# -- autocommit: each statement commits at once, the caller's and pgqueue's alike ---------


@pytest.mark.parametrize("op", ["apply_async", "delay_many"])
def test_on_an_autocommit_connection_jobs_commit_at_once(
    app: pgqueue.App, dsn: str, noop: pgqueue.Task[Any, Any], op: str
) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        ids = _enqueue(noop, op, conn)
        assert _count(dsn) == len(ids)
        with conn.transaction(force_rollback=True):
            _enqueue(noop, op, conn)
    assert _count(dsn) == len(ids)


@pytest.mark.parametrize("op", ["apply_async", "delay_many"])
def test_on_a_sqlalchemy_autocommit_connection_jobs_commit_at_once(
    dsn: str, noop: pgqueue.Task[Any, Any], op: str
) -> None:
    engine = migrate.engine_for(dsn)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            ids = _enqueue(noop, op, connection)
            connection.rollback()
    finally:
        engine.dispose()
    assert _count(dsn) == len(ids)


# -- what is refused --------------------------------------------------------------------


def test_an_engine_is_refused_for_it_has_no_transaction_of_the_callers(
    dsn: str, noop: pgqueue.Task[Any, Any]
) -> None:
    engine = migrate.engine_for(dsn)
    try:
        with pytest.raises(TypeError, match="Engine"):
            noop.apply_async(connection=engine)
        with pytest.raises(TypeError, match="Engine"):
            noop.delay_many([(1,)], connection=engine)
    finally:
        engine.dispose()
    assert _count(dsn) == 0


def test_an_aborted_transaction_is_refused_with_the_databases_error(
    dsn: str, noop: pgqueue.Task[Any, Any]
) -> None:
    engine = migrate.engine_for(dsn)
    try:
        with Session(engine) as session:
            with pytest.raises(sa.exc.DBAPIError):
                session.execute(sa.text("SELECT 1/0"))
            for enqueue in (
                lambda: noop.apply_async(connection=session),
                lambda: noop.delay_many([(1,)], connection=session),
            ):
                with pytest.raises(psycopg.errors.InFailedSqlTransaction):
                    enqueue()
            session.rollback()
    finally:
        engine.dispose()
    assert _count(dsn) == 0


# -- the caller's own connection settings -----------------------------------------------


@pytest.mark.parametrize("op", ["apply_async", "delay_many"])
def test_a_connection_with_a_dict_row_factory_enqueues(
    app: pgqueue.App, dsn: str, noop: pgqueue.Task[Any, Any], op: str
) -> None:
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        ids = _enqueue(noop, op, conn)
        conn.commit()
    assert [app.get_job(i).task_name for i in ids] == [noop.name] * len(ids)


def test_an_async_connection_with_a_dict_row_factory_enqueues(
    app: pgqueue.App, dsn: str, noop: pgqueue.Task[Any, Any]
) -> None:
    async def scenario() -> list[int]:
        async with await psycopg.AsyncConnection.connect(dsn, row_factory=dict_row) as conn:
            ids = [(await noop.aapply_async(args=(1,), connection=conn)).id]
            ids += await noop.adelay_many([(2,)], connection=conn)
            await conn.commit()
        return ids

    ids = asyncio.run(scenario())
    assert [app.get_job(i).task_name for i in ids] == [noop.name] * 2


# -- errors keep their class ------------------------------------------------------------

Enqueue = Callable[[pgqueue.Task[Any, Any], Any], Any]
ENQUEUES: dict[str, Enqueue] = {
    "apply_async": lambda task, conn: task.apply_async(args=(1,), connection=conn),
    "delay_many": lambda task, conn: task.delay_many([(1,)], connection=conn),
}


@pytest.mark.parametrize("op", list(ENQUEUES))
def test_a_statement_timeout_in_the_callers_transaction_stays_query_canceled(
    dsn: str, noop: pgqueue.Task[Any, Any], op: str
) -> None:
    with psycopg.connect(dsn) as holder, psycopg.connect(dsn) as conn:
        holder.execute("LOCK TABLE pgqueue_jobs IN ACCESS EXCLUSIVE MODE")
        conn.execute("SET statement_timeout = '50ms'")
        with pytest.raises(psycopg.errors.QueryCanceled):
            ENQUEUES[op](noop, conn)
        conn.rollback()
        holder.rollback()


def test_a_serialization_failure_stays_one_so_retry_loops_work(
    dsn: str, noop: pgqueue.Task[Any, Any]
) -> None:
    """Two serializable transactions that each read what the other writes: the second to
    write fails with SerializationFailure, which the caller's retry loop catches."""
    with psycopg.connect(dsn) as first, psycopg.connect(dsn) as second:
        for conn in (first, second):
            conn.isolation_level = psycopg.IsolationLevel.SERIALIZABLE
            conn.execute("SELECT count(*) FROM pgqueue_jobs")
        noop.apply_async(args=(1,), connection=first)
        first.execute("SELECT 1")
        noop.apply_async(args=(2,), connection=second)
        first.commit()
        with pytest.raises(psycopg.errors.SerializationFailure):
            noop.apply_async(args=(3,), connection=second)
            second.commit()


# -- a lost connection ------------------------------------------------------------------


@pytest.mark.parametrize("autocommit", [False, True], ids=["transaction", "autocommit"])
@pytest.mark.parametrize("op", list(ENQUEUES))
def test_a_lost_caller_connection_says_what_became_of_the_job(
    dsn: str, conn: psycopg.Connection[Any], noop: pgqueue.Task[Any, Any], op: str, autocommit: bool
) -> None:
    with psycopg.connect(dsn, autocommit=autocommit) as caller:
        caller.execute("SELECT 1")
        _terminate(conn, caller.info.backend_pid)
        expected = "may or may not have been committed" if autocommit else "transaction is gone"
        with pytest.raises(pgqueue.DatabaseUnavailable, match=expected):
            ENQUEUES[op](noop, caller)


@pytest.mark.parametrize("op", list(ENQUEUES))
def test_a_lost_sqlalchemy_connection_says_the_transaction_is_gone(
    dsn: str, conn: psycopg.Connection[Any], noop: pgqueue.Task[Any, Any], op: str
) -> None:
    engine = migrate.engine_for(dsn)
    try:
        with engine.connect() as caller:
            pid = caller.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            _terminate(conn, pid)
            with pytest.raises(pgqueue.DatabaseUnavailable, match="transaction is gone"):
                ENQUEUES[op](noop, caller)
    finally:
        engine.dispose()
