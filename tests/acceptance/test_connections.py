"""A worker holds two server connections at rest, whatever its concurrency: the listening one
(LISTEN, its presence lock and heartbeat, the periodic scheduler) and the shared one (claims,
outcomes, progress, maintenance). Connections its tasks opened are closed once no job has run
for REST_AFTER seconds. Counted in pg_stat_activity by the worker's application_name."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from pgqueue.worker import REST_AFTER
from tests.acceptance import connections_app as tasks
from tests.acceptance.helpers import WorkerProcess, enqueue
from tests.conftest import wait_until

APP = "tests.acceptance.connections_app:app"


def _count(conn: psycopg.Connection[Any], name: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def _unfinished(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM pgqueue_jobs").fetchone()
    assert row is not None
    return int(row[0])


def test_a_worker_holds_two_connections_at_rest_whatever_its_concurrency(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    name = f"pgqueue-rest-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(
        make_conninfo(dsn, application_name=name),
        tmp_path / "worker.log",
        ["--concurrency", "50"],
        app=APP,
    )
    try:
        worker.launch().wait_ready()
        # Ready and idle: the listening connection and the shared one, nothing else (the
        # start-up's own checks have closed theirs).
        wait_until(lambda: _count(conn, name) == 2, timeout=15, what="2 connections once ready")
        for _ in range(20):
            enqueue(conn, tasks.fan_out, 5)
            enqueue(conn, tasks.afan_out, 5)
            enqueue(conn, tasks.in_transaction)
        for _ in range(5):
            enqueue(conn, tasks.with_progress, 20)
        wait_until(lambda: _unfinished(conn) == 0, timeout=60, what="every job finished")
        busy = _count(conn, name)
        assert busy > 2  # the tasks opened connections of their own
        # At rest again: the tasks' connections are closed, the two remain.
        wait_until(
            lambda: _count(conn, name) == 2,
            timeout=REST_AFTER + 30,
            what=f"back to 2 connections at rest (from {busy})",
        )
        failed = conn.execute(
            "SELECT count(*) FROM pgqueue_finished_jobs WHERE status <> 'succeeded'"
        ).fetchone()
        assert failed == (0,)
        done = conn.execute("SELECT count(*) FROM pgqueue_finished_jobs").fetchone()
        assert done == (20 * 5 * 2 + 20 * 3 + 5,)
    finally:
        worker.cleanup()
        print(worker.log())
