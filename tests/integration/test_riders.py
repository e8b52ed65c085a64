"""Outcomes that ride with a claim: the worker sends the outcomes waiting to be written and its
next claim in one round trip, on its shared connection; both commit, or neither does. A trip
that fails hands its outcomes back to the completer, which writes them on its own and finds
any the database refuses; no job loses its outcome or runs twice for it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg

import pgqueue
from tests.conftest import WorkerThread, wait_until
from tests.integration.test_completer_errors import _accept, _refuse

StartWorker = Callable[..., WorkerThread]


def _finished(conn: psycopg.Connection[Any]) -> dict[str, int]:
    rows = conn.execute(
        "SELECT status::text, count(*) FROM pgqueue_finished_jobs GROUP BY 1"
    ).fetchall()
    return {status: int(n) for status, n in rows}


def test_outcomes_ride_with_claims_and_every_job_ends_once(
    app: pgqueue.App, conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    @app.task
    async def quick(n: int) -> int:
        return n

    worker = start_worker(app, concurrency=8)
    quick.delay_many([(n,) for n in range(600)])
    wait_until(lambda: sum(_finished(conn).values()) == 600, timeout=60, what="600 jobs ended")
    assert _finished(conn) == {"succeeded": 600}
    row = conn.execute(
        "SELECT count(*) FROM pgqueue_finished_jobs WHERE attempts = 1 AND result::int < 600"
    ).fetchone()
    assert row == (600,)
    assert worker.worker.completer.rides > 0  # some went in the claims' round trips


def test_a_refused_outcome_riding_with_a_claim_fails_alone_and_the_rest_are_written_once(
    app: pgqueue.App, conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    @app.task
    async def fine(n: int) -> int:
        return n

    @app.task
    async def refused(n: int) -> int:
        return n

    _refuse(
        conn,
        "check_violation",
        "NEW.task_name LIKE '%refused' AND NEW.status = 'succeeded'",
    )
    try:
        worker = start_worker(app, concurrency=8)
        fine.delay_many([(n,) for n in range(300)])
        refused.delay_many([(n,) for n in range(10)])
        fine.delay_many([(n,) for n in range(300, 600)])
        wait_until(lambda: sum(_finished(conn).values()) == 610, timeout=60, what="610 ended")
    finally:
        _accept(conn)
    assert _finished(conn) == {"succeeded": 600, "failed": 10}
    failures = conn.execute(
        "SELECT DISTINCT task_name, error->>'type' FROM pgqueue_finished_jobs"
        " WHERE status = 'failed'"
    ).fetchall()
    assert [(name.rsplit(".", 1)[-1], kind) for name, kind in failures] == [
        ("refused", "OutcomeNotStored")
    ]
    assert conn.execute(
        "SELECT count(*) FROM pgqueue_finished_jobs WHERE attempts <> 1"
    ).fetchone() == (0,)
    assert not worker.worker.crashed
    # The refusals met claims' round trips, which handed their outcomes back.
    assert worker.worker.completer.failed_rides > 0
