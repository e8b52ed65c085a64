"""Connections the server ends (restart, pg_terminate_backend, idle timeout) are made again."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg

import pgqueue
from tests.conftest import wait_until


def _terminate(conn: psycopg.Connection[Any], pid: int) -> None:
    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    wait_until(
        lambda: conn.execute(
            "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()[0],  # type: ignore[index]
        what="the backend to end",
    )


def test_enqueue_after_the_server_ended_the_idle_connection(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    @app.task
    def noop() -> None: ...

    noop.delay()
    _terminate(conn, app._shared_connection().info.backend_pid)
    job = noop.delay()
    assert app.get_job(job.id).status is pgqueue.JobStatus.QUEUED


def test_async_enqueue_after_the_server_ended_the_idle_connection(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    @app.task
    def noop() -> None: ...

    async def scenario() -> int:
        await noop.adelay()
        shared = await app._ashared_connection()
        _terminate(conn, shared.info.backend_pid)
        return (await noop.adelay()).id

    job_id = asyncio.run(scenario())
    assert app.get_job(job_id).status is pgqueue.JobStatus.QUEUED


def test_enqueue_when_the_database_is_down_raises_and_pretends_nothing() -> None:
    app = pgqueue.App("postgresql://postgres@127.0.0.1:1/none?connect_timeout=2")

    @app.task
    def noop() -> None: ...

    try:
        noop.delay()
    except pgqueue.DatabaseUnavailable as exc:
        assert "could not connect" in str(exc)
    else:
        raise AssertionError("enqueue on a database that is down must raise")
