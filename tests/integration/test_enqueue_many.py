"""delay_many: many jobs with one COPY, in pgqueue's transaction or the caller's."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import pgqueue
from pgqueue import migrate
from tests.conftest import WorkerThread

StartWorker = Callable[..., WorkerThread]


def _count(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM pgqueue_all_jobs").fetchone()
    assert row is not None
    return int(row[0])


def test_delay_many_enqueues_every_call_and_workers_run_them(
    app: pgqueue.App, start_worker: StartWorker, conn: psycopg.Connection[Any]
) -> None:
    @app.task
    def add(a: int, b: int = 0) -> int:
        return a + b

    ids = add.delay_many([(i, i) for i in range(500)] + [{"a": 1, "b": 2}])
    assert len(ids) == len(set(ids)) == 501
    assert app.get_job(ids[-1]).kwargs == {"a": 1, "b": 2}
    start_worker(app, concurrency=4)
    app.wait_all([app.get_job(i) for i in (ids[0], ids[250], ids[-1])], timeout=60)
    assert app.get_job(ids[250]).result == 500
    assert app.get_job(ids[-1]).result == 3


def test_delay_many_in_a_psycopg_transaction_commits_or_vanishes_with_it(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    @app.task
    def noop(n: int) -> None: ...

    with psycopg.connect(dsn) as tx:
        noop.delay_many([(i,) for i in range(100)], connection=tx)
        assert _count(conn) == 0
        tx.rollback()
    assert _count(conn) == 0
    with psycopg.connect(dsn) as tx:
        noop.delay_many([(i,) for i in range(100)], connection=tx)
        tx.commit()
    assert _count(conn) == 100


def test_delay_many_in_a_sqlalchemy_session(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    @app.task
    def noop(n: int) -> None: ...

    engine = migrate.engine_for(dsn)
    try:
        with Session(engine) as session, session.begin():
            session.execute(sa.text("SELECT 1"))
            noop.delay_many([(i,) for i in range(10)], connection=session)
    finally:
        engine.dispose()
    assert _count(conn) == 10


def test_adelay_many_in_a_sqlalchemy_async_session(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    @app.task
    def noop(n: int) -> None: ...

    async def scenario() -> list[int]:
        engine = create_async_engine(
            "postgresql+psycopg_async://",
            async_creator=lambda: psycopg.AsyncConnection.connect(dsn),
        )
        try:
            async with AsyncSession(engine) as session, session.begin():
                return await noop.adelay_many([(i,) for i in range(10)], connection=session)
        finally:
            await engine.dispose()

    assert len(asyncio.run(scenario())) == 10
    assert _count(conn) == 10


def test_delay_many_options_apply_to_every_job(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    @app.task
    def noop(n: int) -> None: ...

    noop.delay_many([(1,), (2,)], countdown=3600, priority=7, queue="later", expires=7200)
    rows = conn.execute(
        "SELECT queue, priority, run_at - created_at, expires_at - created_at FROM pgqueue_all_jobs"
    ).fetchall()
    assert len(rows) == 2
    for queue, priority, wait, expiry in rows:
        assert (queue, priority) == ("later", 7)
        assert 3590 < wait.total_seconds() <= 3600
        assert 7190 < expiry.total_seconds() <= 7200


@pytest.mark.parametrize(
    ("calls", "message"),
    [
        ([(1,), (object(),)], "call 1 args"),
        ([(1,), "oops"], "call 1 is a str"),
        ([{"n": float("nan")}], "call 0 kwargs"),
    ],
)
def test_a_bad_call_refuses_the_whole_batch_before_writing(
    app: pgqueue.App, conn: psycopg.Connection[Any], calls: list[Any], message: str
) -> None:
    @app.task
    def noop(n: Any) -> None: ...

    with pytest.raises(TypeError, match=message):
        noop.delay_many(calls)
    assert _count(conn) == 0


def test_delay_many_of_nothing_writes_nothing(app: pgqueue.App) -> None:
    @app.task
    def noop() -> None: ...

    assert noop.delay_many([]) == []


def test_delay_many_stores_every_character_as_given(app: pgqueue.App) -> None:
    @app.task
    def echo(*args: Any, **kwargs: Any) -> None: ...

    text = 'back\\slash \\N tab\tnew\nline cr\r quote" été 雪 \u2028 \\\\'
    nested = {"list": [text, 1.5, None, True], "dict": {"k\\": text}}
    ids = echo.delay_many([(text, nested), {"key": text, "n": nested}, ()])
    jobs = [app.get_job(i) for i in ids]
    assert jobs[0].args == [text, nested]
    assert jobs[1].kwargs == {"key": text, "n": nested}
    assert (jobs[2].args, jobs[2].kwargs) == ([], {})
