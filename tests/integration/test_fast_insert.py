"""`delay()` of a job due now runs its INSERT through libpq on pgqueue's own connection
(pgqueue/_fast_insert.py): it must give back what the database holds, survive its prepared
statement being dropped, and fail the way the psycopg path fails."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue import app as app_module
from tests.integration.test_connection_loss import _terminate


def test_delay_returns_the_row_the_database_holds(app: pgqueue.App) -> None:
    @app.task(queue="mail", priority=3, max_attempts=7)
    def send(to: str, *, subject: str) -> None: ...

    job = send.delay("zoë@example.com", subject="héllo ✓")
    stored = app.get_job(job.id)
    assert (stored.queue, stored.task_name, stored.priority, stored.max_attempts) == (
        "mail",
        send.name,
        3,
        7,
    )
    assert stored.args == job.args == ["zoë@example.com"]
    assert stored.kwargs == job.kwargs == {"subject": "héllo ✓"}
    assert job.created_at == stored.created_at == stored.run_at == job.run_at
    assert job.created_at.utcoffset() == stored.created_at.utcoffset()
    assert stored.status is pgqueue.JobStatus.QUEUED


def test_delay_prepares_again_when_the_server_dropped_its_statement(app: pgqueue.App) -> None:
    @app.task
    def noop() -> None: ...

    first = noop.delay()
    for reset in ("DEALLOCATE ALL", "DISCARD ALL"):
        app._shared_connection().execute(reset)
        job = noop.delay()
        assert app.get_job(job.id).status is pgqueue.JobStatus.QUEUED
    assert job.id > first.id


def test_a_server_error_is_psycopgs_own_class_and_writes_nothing(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    @app.task(name="refused")
    def refused() -> None: ...

    conn.execute(
        "ALTER TABLE pgqueue_jobs ADD CONSTRAINT no_refused CHECK (task_name <> 'refused')"
    )
    conn.commit()
    with pytest.raises(psycopg.errors.CheckViolation, match="no_refused"):
        refused.delay()
    assert conn.execute("SELECT count(*) FROM pgqueue_jobs").fetchone() == (0,)
    conn.execute("ALTER TABLE pgqueue_jobs DROP CONSTRAINT no_refused")
    conn.commit()
    assert app.get_job(refused.delay().id).status is pgqueue.JobStatus.QUEUED


@pytest.fixture
def unchecked_connections(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The shared connection taken as healthy without a look: the server ends it between the
    look and the INSERT."""
    monkeypatch.setattr(app_module, "idle_connection_ok", lambda conn: not conn.closed)
    yield


def test_a_connection_lost_during_the_insert_raises_database_unavailable(
    app: pgqueue.App, conn: psycopg.Connection[Any], unchecked_connections: None
) -> None:
    @app.task
    def noop() -> None: ...

    noop.delay()
    _terminate(conn, app._shared_connection().info.backend_pid)
    with pytest.raises(pgqueue.DatabaseUnavailable, match="may or may not have been committed"):
        noop.delay()
    # The broken connection is made again at the next call.
    assert app.get_job(noop.delay().id).status is pgqueue.JobStatus.QUEUED


def test_delay_before_migrating_says_what_to_do(empty_dsn: str) -> None:
    app = pgqueue.App(empty_dsn)

    @app.task
    def noop() -> None: ...

    try:
        with pytest.raises(pgqueue.SchemaNotMigrated, match="pgqueue migrate"):
            noop.delay()
    finally:
        app.close()
