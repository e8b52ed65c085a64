"""Enqueueing through a real PgBouncer in transaction mode: pgqueue's own connections with
`transaction_pooling=True`, and the caller's connection with psycopg's prepared statements off.

Between two statements of the connection under test, another client takes the server
connection it just used (PgBouncer hands out the most recently released one first), so each
statement lands on a different server connection: a statement prepared on one is unknown on
the next, as it is on a busy pooler.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue.errors import ConfigurationError
from pgqueue.exporter import FleetReader
from tests.servers import PgBouncer

ENQUEUES = 12  # over twice psycopg's prepare_threshold (5)


@pytest.fixture
def bouncer(dsn: str) -> Iterator[PgBouncer]:
    server = PgBouncer(dsn, pool_mode="transaction")
    yield server
    server.stop()


class Rotation:
    """`with rotation:` around a statement runs it on another server connection than the
    statement before it: one of two other clients takes the server connection released last
    (the one that statement used) and holds it in a transaction, then the other lets go of
    the one it held, which the next statement gets."""

    def __init__(self, bouncer: PgBouncer) -> None:
        self.hogs = [psycopg.connect(bouncer.dsn, prepare_threshold=None) for _ in range(2)]

    def __enter__(self) -> None:
        self.hogs.reverse()
        self.hogs[0].execute("SELECT 1")  # opens a transaction: holds its server connection
        self.hogs[1].rollback()

    def __exit__(self, *exc: object) -> None:
        pass

    def close(self) -> None:
        for hog in self.hogs:
            hog.close()


@pytest.fixture
def rotation(bouncer: PgBouncer) -> Iterator[Rotation]:
    rotating = Rotation(bouncer)
    yield rotating
    rotating.close()


def backend_pid(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT pg_backend_pid()", prepare=False).fetchone()
    assert row is not None
    return int(row[0])


def test_the_rotation_moves_statements_between_server_connections_and_breaks_prepared_ones(
    bouncer: PgBouncer, rotation: Rotation
) -> None:
    with psycopg.connect(bouncer.dsn, autocommit=True) as conn:
        pids = []
        for _ in range(4):
            with rotation:
                pids.append(backend_pid(conn))
        assert pids[0] != pids[1] and pids[1] != pids[2], pids
        with pytest.raises(psycopg.errors.InvalidSqlStatementName):
            for n in range(ENQUEUES):
                with rotation:
                    conn.execute("SELECT %s::int", (n,))


def test_delay_on_pgqueues_own_connection_through_a_transaction_pooler(
    dsn: str, bouncer: PgBouncer, rotation: Rotation, conn: psycopg.Connection[Any]
) -> None:
    app = pgqueue.App(bouncer.dsn, transaction_pooling=True)

    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    jobs = []
    try:
        for n in range(ENQUEUES):
            with rotation:
                jobs.append(add.delay(n, 1))
        for n in range(ENQUEUES):
            with rotation:
                jobs.append(add.apply_async((n, 2), countdown=60))
        for job in jobs[:ENQUEUES]:
            with rotation:
                assert app.get_job(job.id).id == job.id
    finally:
        app.close()
    rows = conn.execute(
        "SELECT id, args FROM pgqueue_all_jobs WHERE task_name = %s ORDER BY id",
        (add.name,),
    ).fetchall()
    assert [row[0] for row in rows] == [job.id for job in jobs]
    assert [row[1] for row in rows] == [[n, k] for k in (1, 2) for n in range(ENQUEUES)]
    # Nothing left prepared on a server connection the app used (one a hog holds now).
    held = rotation.hogs[0].execute("SELECT name FROM pg_prepared_statements").fetchall()
    assert held == []


def test_async_delay_through_a_transaction_pooler(
    bouncer: PgBouncer, rotation: Rotation, conn: psycopg.Connection[Any]
) -> None:
    app = pgqueue.App(bouncer.dsn, transaction_pooling=True)

    @app.task
    def echo(n: int) -> int:
        return n

    async def enqueue() -> None:
        try:
            for n in range(ENQUEUES):
                with rotation:
                    await echo.adelay(n)
        finally:
            await app.aclose()

    asyncio.run(enqueue())
    row = conn.execute(
        "SELECT count(*) FROM pgqueue_all_jobs WHERE task_name = %s", (echo.name,)
    ).fetchone()
    assert row == (ENQUEUES,)


def test_apply_async_on_the_callers_connection_with_prepared_statements_off(
    bouncer: PgBouncer, rotation: Rotation, conn: psycopg.Connection[Any]
) -> None:
    app = pgqueue.App(bouncer.dsn, transaction_pooling=True)

    @app.task
    def echo(n: int) -> int:
        return n

    with psycopg.connect(bouncer.dsn, prepare_threshold=None) as own:
        for n in range(ENQUEUES):
            with rotation, own.transaction():
                own.execute("SELECT %s::int", (n,))  # the caller's own work, same transaction
                echo.apply_async((n,), connection=own)
    row = conn.execute(
        "SELECT count(*) FROM pgqueue_all_jobs WHERE task_name = %s", (echo.name,)
    ).fetchone()
    assert row == (ENQUEUES,)


def test_transaction_pooling_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGQUEUE_TRANSACTION_POOLING", "1")
    assert pgqueue.App("postgresql:///x").transaction_pooling
    assert not pgqueue.App("postgresql:///x", transaction_pooling=False).transaction_pooling
    monkeypatch.setenv("PGQUEUE_TRANSACTION_POOLING", "0")
    assert not pgqueue.App("postgresql:///x").transaction_pooling
    monkeypatch.setenv("PGQUEUE_TRANSACTION_POOLING", "maybe")
    with pytest.raises(ConfigurationError, match="PGQUEUE_TRANSACTION_POOLING must be 1 or 0"):
        _ = pgqueue.App("postgresql:///x").transaction_pooling


def test_listen_dsn_defaults_to_the_dsn_and_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PGQUEUE_LISTEN_DSN", raising=False)
    app = pgqueue.App("postgresql://h/db")
    assert app.listen_dsn == "postgresql://h/db" and not app.has_own_listen_dsn
    monkeypatch.setenv("PGQUEUE_LISTEN_DSN", "postgresql+psycopg://direct/db")
    assert app.listen_dsn == "postgresql://direct/db" and app.has_own_listen_dsn
    assert pgqueue.App("postgresql://h/db", listen_dsn="postgresql://x/db").listen_dsn == (
        "postgresql://x/db"
    )


def test_a_worker_and_job_wait_with_the_listen_dsn_direct(
    dsn: str, bouncer: PgBouncer, conn: psycopg.Connection[Any], start_worker: Any
) -> None:
    app = pgqueue.App(bouncer.dsn, listen_dsn=dsn, transaction_pooling=True)

    @app.task
    def echo(n: int) -> int:
        return n

    with app.connect_listen(autocommit=True) as listening:
        assert listening.info.port == conn.info.port  # straight to the server
        assert listening.prepare_threshold == 5  # a direct connection keeps psycopg's default
    with app.connect(autocommit=True) as pooled:
        assert pooled.info.port == bouncer.port
        assert pooled.prepare_threshold is None
    start_worker(app, concurrency=2)
    jobs = [echo.delay(n) for n in range(ENQUEUES)]
    app.wait_all(jobs, timeout=30)
    assert [job.refresh().result for job in jobs] == list(range(ENQUEUES))
    assert jobs[0].wait(timeout=5) == 0
    app.close()


def test_the_exporter_reads_through_a_transaction_pooler_and_leaves_no_setting_behind(
    bouncer: PgBouncer, rotation: Rotation
) -> None:
    app = pgqueue.App(bouncer.dsn, transaction_pooling=True)
    reader = FleetReader(app, min_interval=0)
    try:
        for _ in range(ENQUEUES):
            with rotation:
                assert reader.read().ok
        # The server connection the last reading used, now held by a hog: its default back.
        row = rotation.hogs[0].execute("SHOW statement_timeout").fetchone()
        assert row == ("0",)
    finally:
        reader.close()


@pytest.mark.parametrize("size", [3, 500], ids=["few", "copy-sized"])
def test_delay_many_through_a_transaction_pooler(
    bouncer: PgBouncer, rotation: Rotation, conn: psycopg.Connection[Any], size: int
) -> None:
    app = pgqueue.App(bouncer.dsn, transaction_pooling=True)

    @app.task
    def echo(n: int) -> int:
        return n

    try:
        for round_ in range(ENQUEUES):
            with rotation:
                echo.delay_many([(round_ * size + n,) for n in range(size)])
    finally:
        app.close()
    row = conn.execute(
        "SELECT count(*), count(DISTINCT args) FROM pgqueue_all_jobs WHERE task_name = %s",
        (echo.name,),
    ).fetchone()
    assert row == (ENQUEUES * size, ENQUEUES * size)
