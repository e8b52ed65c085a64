"""Enqueueing writes exactly one row, in the caller's transaction when given one."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

import pgqueue


def _count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM pgqueue_all_jobs").fetchone()
        assert row is not None
        return int(row[0])


def test_delay_commits_a_queued_job(app: pgqueue.App, dsn: str) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    job = add.delay(2, 3)
    assert job.status is pgqueue.JobStatus.QUEUED
    assert job.attempts == 0
    assert app.get_job(job.id).args == [2, 3]
    assert _count(dsn) == 1


def test_rollback_leaves_no_job(app: pgqueue.App, dsn: str) -> None:
    @app.task
    def noop() -> None: ...

    with psycopg.connect(dsn) as conn:
        noop.apply_async(connection=conn)
        conn.rollback()
    assert _count(dsn) == 0


def test_job_invisible_until_commit(app: pgqueue.App, dsn: str) -> None:
    @app.task
    def noop() -> None: ...

    with psycopg.connect(dsn) as conn:
        noop.apply_async(connection=conn)
        assert _count(dsn) == 0
        conn.commit()
    assert _count(dsn) == 1


def test_unserialisable_arguments_raise_type_error_and_write_nothing(
    app: pgqueue.App, dsn: str
) -> None:
    @app.task
    def takes(x: Any) -> None: ...

    for bad in (object(), {1: "int key"}, float("nan"), {"nested": [set()]}):
        with pytest.raises(TypeError, match="cannot be stored as JSON"):
            takes.delay(bad)
    assert _count(dsn) == 0
