"""The completer sorts database errors by what they mean: a database that cannot take writes
for a while keeps every outcome pending until it can; an outcome the database refuses ends
that job alone FAILED; nothing is dropped and nothing is written twice."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

import pgqueue
from pgqueue._connection import HOT_PATH_SETTINGS, ReconnectingConnection
from pgqueue.complete import Completer
from pgqueue.outcome import ClaimedJob, Failed, Outcome, Succeeded, simple_error
from tests.integration.test_hostile_outcomes import _claim

DEADLINE = 15.0


class _Records(logging.Handler):
    """The completer's log lines, as they are logged."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    def count(self, text: str) -> int:
        return sum(text in line for line in self.lines)


@pytest.fixture
def records() -> Iterator[_Records]:
    handler = _Records()
    logger = logging.getLogger("pgqueue.worker")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)


async def _until(condition: Callable[[], Any], what: str) -> None:
    """Poll `condition` from inside the event loop (the completer runs in it) until true."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {DEADLINE}s waiting for {what}")
        await asyncio.sleep(0.02)  # polling interval of a deadline-bound wait


def _jobs(app: pgqueue.App, conn: psycopg.Connection[Any], count: int) -> list[ClaimedJob]:
    @app.task
    def noop() -> None: ...

    noop.delay_many([() for _ in range(count)])
    return sorted(_claim(conn, count), key=lambda job: job.id)


def _rows(conn: psycopg.Connection[Any]) -> dict[int, dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        return {
            row["id"]: row
            for row in cur.execute(
                "SELECT id, status::text AS status, result, error, attempts FROM pgqueue_all_jobs"
            ).fetchall()
        }


def _refuse(conn: psycopg.Connection[Any], errcode: str, when: str = "true") -> None:
    """Make the database refuse to end the jobs matching `when` (over NEW, the archived row)
    with SQLSTATE `errcode`, as a trigger on the table every ended job is moved to."""
    conn.execute(
        f"""
        CREATE FUNCTION refuse_outcome() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'refused job %', NEW.id USING ERRCODE = '{errcode}';
        END $$;
        CREATE TRIGGER refuse_outcome BEFORE INSERT ON pgqueue_finished_jobs
        FOR EACH ROW WHEN ({when}) EXECUTE FUNCTION refuse_outcome();
        """
    )


def _accept(conn: psycopg.Connection[Any]) -> None:
    conn.execute("DROP TRIGGER refuse_outcome ON pgqueue_finished_jobs")


async def _complete(
    app: pgqueue.App, outcomes: list[Outcome], meanwhile: Callable[[Completer], Awaitable[None]]
) -> None:
    """Submit `outcomes` to a completer on a real connection, run `meanwhile`, then drain it;
    the completer must neither raise nor end before it is drained."""
    completer = Completer(ReconnectingConnection(app, HOT_PATH_SETTINGS))
    running = asyncio.create_task(completer.run())
    for outcome in outcomes:
        completer.submit(outcome)
    try:
        await meanwhile(completer)
        assert not running.done(), "the completer stopped"
        assert await completer.drain(DEADLINE), "outcomes were left unwritten"
        await asyncio.wait_for(running, DEADLINE)
    finally:
        running.cancel()
        await completer.close()


def _outcomes(jobs: list[ClaimedJob]) -> list[Outcome]:
    return [
        Failed(job, simple_error("ValueError", f"failure {n}"))
        if n % 2
        else Succeeded(job, f'"result {n}"')
        for n, job in enumerate(jobs)
    ]


def _assert_real_outcomes(
    rows: dict[int, dict[str, Any]], jobs: list[ClaimedJob], skip: frozenset[int] = frozenset()
) -> None:
    """Each job of `jobs` (but those in `skip`) ended with its own outcome from `_outcomes`."""
    for n, job in enumerate(jobs):
        if job.id in skip:
            continue
        row = rows[job.id]
        assert row["attempts"] == 1
        if n % 2:
            assert (row["status"], row["error"]["message"]) == ("failed", f"failure {n}")
        else:
            assert (row["status"], row["result"]) == ("succeeded", f"result {n}")


@pytest.mark.parametrize(
    "errcode", ["program_limit_exceeded", "undefined_column", "check_violation"]
)
def test_an_outcome_the_database_refuses_ends_that_job_failed_and_the_rest_are_written_once(
    app: pgqueue.App, conn: psycopg.Connection[Any], records: _Records, errcode: str
) -> None:
    """A result too big for one jsonb document (54000) is an OperationalError in psycopg: it
    was retried forever, and every later outcome of the worker waited behind it."""
    jobs = _jobs(app, conn, 5)
    bad = jobs[2]
    _refuse(conn, errcode, f"NEW.id = {bad.id} AND NEW.status = 'succeeded'")
    outcomes = _outcomes(jobs)
    outcomes[2] = Succeeded(bad, '"too big"')

    async def nothing(completer: Completer) -> None:
        pass

    asyncio.run(_complete(app, outcomes, nothing))
    rows = _rows(conn)
    _assert_real_outcomes(rows, jobs, skip=frozenset({bad.id}))
    assert rows[bad.id]["status"] == "failed"
    assert rows[bad.id]["error"]["type"] == "OutcomeNotStored"
    assert (
        "the database refused this attempt's succeeded outcome"
        in (rows[bad.id]["error"]["message"])
    )
    assert f"refused job {bad.id}" in rows[bad.id]["error"]["message"]
    assert rows[bad.id]["attempts"] == 1
    assert records.count("lost its lease") == 0  # nothing was sent twice or dropped


@pytest.mark.parametrize(
    "errcode",
    [
        "read_only_sql_transaction",  # a failover left the connection on a standby
        "serialization_failure",
        "deadlock_detected",
        "disk_full",
        "too_many_connections",
        "io_error",
        "insufficient_privilege",  # refused: its FAILED is refused too, so it is kept
    ],
)
def test_a_database_that_refuses_every_write_for_a_while_keeps_every_outcome_until_it_accepts(
    app: pgqueue.App, conn: psycopg.Connection[Any], records: _Records, errcode: str
) -> None:
    """A read-only transaction (an InternalError) or a missing privilege was taken for a
    problem with one outcome: each job's replacement FAILED was refused as well, and the
    whole batch was dropped, to be given back to the queue and run again."""
    jobs = _jobs(app, conn, 4)
    _refuse(conn, errcode)

    async def refused_for_a_while(completer: Completer) -> None:
        await _until(lambda: len(records.lines) >= 6, "several refused writes")
        assert completer.pending_ids() == {job.id for job in jobs}
        assert {row["status"] for row in _rows(conn).values()} == {"running"}
        _accept(conn)

    asyncio.run(_complete(app, _outcomes(jobs), refused_for_a_while))
    _assert_real_outcomes(_rows(conn), jobs)
    assert records.count("lost its lease") == 0


def test_a_read_only_database_keeps_every_outcome_until_it_takes_writes_again(
    app: pgqueue.App, conn: psycopg.Connection[Any], records: _Records
) -> None:
    """As after a failover that leaves the completer connected to a standby."""
    jobs = _jobs(app, conn, 4)
    (dbname,) = conn.execute("SELECT current_database()").fetchall()[0]
    conn.execute(f'ALTER DATABASE "{dbname}" SET default_transaction_read_only = on')

    async def read_only_for_a_while(completer: Completer) -> None:
        try:
            await _until(
                lambda: records.count("read-only transaction") >= 3, "several refused writes"
            )
            assert completer.pending_ids() == {job.id for job in jobs}
            assert {row["status"] for row in _rows(conn).values()} == {"running"}
        finally:
            conn.execute(f'ALTER DATABASE "{dbname}" RESET default_transaction_read_only')

    asyncio.run(_complete(app, _outcomes(jobs), read_only_for_a_while))
    _assert_real_outcomes(_rows(conn), jobs)
    assert records.count("lost its lease") == 0


def test_an_outcome_whose_failure_is_refused_too_is_kept_and_the_others_are_written(
    app: pgqueue.App, conn: psycopg.Connection[Any], records: _Records
) -> None:
    """The replacement FAILED was refused as well: the outcome was dropped (the job given
    back and run again), while the log said the job stayed running."""
    jobs = _jobs(app, conn, 5)
    stuck = jobs[1]
    _refuse(conn, "program_limit_exceeded", f"NEW.id = {stuck.id}")

    async def refused_for_a_while(completer: Completer) -> None:
        await _until(
            lambda: records.count("refused even its failure") >= 2, "several refused writes"
        )
        assert completer.pending_ids() == {stuck.id}
        rows = _rows(conn)
        assert rows[stuck.id]["status"] == "running"
        _assert_real_outcomes(rows, jobs, skip=frozenset({stuck.id}))
        _accept(conn)

    asyncio.run(_complete(app, _outcomes(jobs), refused_for_a_while))
    # Once the database takes it, the attempt's own outcome is written, not a FAILED.
    _assert_real_outcomes(_rows(conn), jobs)
    assert records.count("lost its lease") == 0
