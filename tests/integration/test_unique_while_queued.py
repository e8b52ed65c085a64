"""Unique while queued (`unique_states=("queued",)`): at most one job waits per key while jobs
of the key run; a job that goes back to queued (a retry, a give-back, a rescue, an operator's
retry) keeps its key only when no queued job holds it, never failing the statement that sends
it back; bad states refused before anything is written; the migration goes both ways."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue import admin, migrate, queries
from pgqueue.cli import main
from pgqueue.complete import Completer, write_outcomes_sync
from pgqueue.errors import ConfigurationError
from pgqueue.outcome import ClaimedJob, Outcome, RetryLater, Succeeded, simple_error
from tests.integration.test_completer_errors import _complete, _Records, _until, records
from tests.integration.test_hostile_outcomes import _claim
from tests.integration.test_schema import schema_diff

__all__ = ["records"]  # the completer's log lines, a fixture

Conn = psycopg.Connection[Any]
QUEUED = ("queued",)


def _count(conn: Conn) -> int:
    row = conn.execute("SELECT count(*) FROM pgqueue_all_jobs").fetchone()
    assert row is not None
    return int(row[0])


def _claim_all(conn: Conn, count: int) -> dict[int, ClaimedJob]:
    """Claim the `count` jobs due now, as a worker would: they are running."""
    return {job.id: job for job in _claim(conn, count)}


def _holder(task: pgqueue.Task[Any, Any], key: str) -> int:
    """The id of the job an enqueue of `key`, held while queued, meets (or inserts)."""
    return task.apply_async((0,), unique_key=key, unique_states=QUEUED, countdown=3600).id


def test_a_key_held_while_queued_frees_itself_when_its_job_starts(
    app: pgqueue.App, conn: Conn, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    @app.task(unique=("account",), unique_states=QUEUED)
    def refresh(account: int, reason: str = "") -> None: ...

    first = refresh.delay(7)
    assert first.created and first.unique_key is not None and "account" in first.unique_key
    again = refresh.apply_async((7,), {"reason": "saved again"})
    assert again.id == first.id and again.duplicate and again.args == [7]
    assert refresh.delay(8).created  # another key
    (claimed,) = _claim(conn, 1)
    assert claimed.id == first.id
    # Running: it holds nothing, and a save now gets a new pending refresh, one only.
    second = refresh.delay(7)
    assert second.created and second.id != first.id
    assert refresh.delay(7).id == second.id
    assert app.get_job(first.id).unique_key == first.unique_key  # kept for the record
    assert _count(conn) == 3
    assert main(["jobs", "show", str(second.id), "--dsn", dsn]) == 0
    assert f"unique key         {first.unique_key}" in capsys.readouterr().out


def test_the_default_states_still_hold_the_key_while_the_job_runs(
    app: pgqueue.App, conn: Conn
) -> None:
    @app.task
    def report() -> None: ...

    first = report.apply_async(unique_key="k", unique_states=["running", "queued"])
    _claim(conn, 1)
    for states in (None, ("queued", "running")):
        again = report.apply_async(unique_key="k", unique_states=states)
        assert again.id == first.id and again.status is pgqueue.JobStatus.RUNNING
    # The two kinds of key do not meet: a key is unique among jobs of the same states.
    assert report.apply_async(unique_key="k", unique_states=QUEUED).created
    assert _count(conn) == 2


def test_replace_gives_the_queued_job_the_new_arguments_and_leaves_the_running_one(
    app: pgqueue.App, conn: Conn
) -> None:
    @app.task(unique=("account",), unique_states=QUEUED, on_conflict="replace")
    def refresh(account: int, reason: str = "") -> None: ...

    first = refresh.apply_async((7,), {"reason": "a"}, countdown=30)
    replaced = refresh.apply_async((7,), {"reason": "b"}, countdown=60)
    assert replaced.id == first.id and replaced.replaced
    conn.execute("UPDATE pgqueue_jobs SET run_at = now()")
    _claim(conn, 1)
    # A save while it runs: a new pending job, which the next saves replace in turn.
    pending = refresh.apply_async((7,), {"reason": "c"})
    assert pending.created and pending.id != first.id and not pending.replaced
    latest = refresh.apply_async((7,), {"reason": "d"})
    assert latest.id == pending.id and latest.replaced and latest.kwargs == {"reason": "d"}
    assert app.get_job(first.id).kwargs == {"reason": "b"}
    assert _count(conn) == 2


def test_a_period_holds_the_key_whatever_the_states_and_then_the_states_do(
    app: pgqueue.App, conn: Conn
) -> None:
    @app.task(unique=True, unique_for=60, unique_states=QUEUED)
    def export() -> None: ...

    first = export.delay()
    _claim(conn, 1)
    assert export.delay().id == first.id  # within the period, running or not
    conn.execute("UPDATE pgqueue_unique_periods SET until = now() - interval '1 second'")
    second = export.delay()  # the period ran out, and a running job holds nothing
    assert second.created and second.id != first.id
    assert export.delay().id == second.id


def test_delay_many_makes_one_waiting_job_per_key(app: pgqueue.App, conn: Conn) -> None:
    @app.task(unique=("n",), unique_states=QUEUED)
    def fetch(n: int, version: int = 0) -> None: ...

    @app.task(unique=("n",))
    def sync(n: int) -> None: ...

    @app.task
    def plain(n: int) -> None: ...

    ids = fetch.delay_many([(1,), (2,), (1, 1)])
    assert ids[0] == ids[2] and len(set(ids)) == 2
    _claim_all(conn, 2)
    again = fetch.delay_many([(2,), (1,), (2, 1)])
    assert again[0] == again[2] and not set(again) & set(ids)
    assert fetch.delay_many([(1,), (3,)])[0] == again[1]
    # At the call, over the task's states; refused for a task without unique jobs.
    (held,) = sync.delay_many([(5,)], unique_states=QUEUED)
    assert conn.execute(
        "SELECT queued_key IS NOT NULL, unique_key FROM pgqueue_jobs WHERE id = %s", (held,)
    ).fetchone() == (True, None)
    with pytest.raises(ConfigurationError, match="applies to tasks with unique jobs"):
        plain.delay_many([(1,)], unique_states=QUEUED)


def test_async_twins_hold_the_key_while_queued(app: pgqueue.App, conn: Conn) -> None:
    @app.task(unique=("n",))
    def fetch(n: int) -> None: ...

    async def enqueue() -> tuple[pgqueue.Job, pgqueue.Job, list[int]]:
        first = await fetch.aapply_async((1,), unique_states=QUEUED)
        again = await fetch.aapply_async((1,), unique_states=QUEUED)
        many = await fetch.adelay_many([(1,), (2,)], unique_states=QUEUED)
        return first, again, many

    first, again, many = asyncio.run(enqueue())
    assert first.created and again.id == first.id and many[0] == first.id
    assert conn.execute(
        "SELECT count(*) FROM pgqueue_jobs WHERE queued_key IS NOT NULL"
    ).fetchone() == (2,)
    assert fetch.delay(1).created  # the same key held while queued or running is another


def _retry(conn: Conn, jobs: list[ClaimedJob]) -> None:
    error = simple_error("ValueError", "again")
    applied = write_outcomes_sync(conn, [RetryLater(job, error) for job in jobs])
    assert applied == {job.id for job in jobs}


def _give_back(conn: Conn, jobs: list[ClaimedJob]) -> None:
    params = {"ids": [job.id for job in jobs], "leases": [job.lease for job in jobs]}
    assert len(conn.execute(queries.RELEASE_UNSTARTED, params).fetchall()) == len(jobs)


def _rescue(conn: Conn, jobs: list[ClaimedJob]) -> None:
    conn.execute("DELETE FROM pgqueue_workers")
    assert len(conn.execute(queries.RESCUE_ORPHANED_JOBS, {}).fetchall()) == len(jobs)


SEND_BACK: dict[str, Callable[[Conn, list[ClaimedJob]], None]] = {
    "retry": _retry,
    "give back": _give_back,
    "rescue": _rescue,
}


@pytest.mark.parametrize("send_back", SEND_BACK)
def test_a_job_back_in_the_queue_meets_the_waiting_job_of_its_key_and_runs_without_it(
    app: pgqueue.App, conn: Conn, send_back: str
) -> None:
    @app.task
    def refresh(n: int) -> None: ...

    keyed = refresh.apply_async((1,), unique_key="k", unique_states=QUEUED)
    plain = refresh.apply_async((2,))
    claimed = _claim_all(conn, 2)
    waiting = refresh.apply_async((3,), unique_key="k", unique_states=QUEUED, countdown=3600)
    assert waiting.created
    SEND_BACK[send_back](conn, [claimed[keyed.id], claimed[plain.id]])
    # Both went back, and the job waiting under the key still holds it.
    assert app.get_job(keyed.id).status is pgqueue.JobStatus.QUEUED
    assert app.get_job(keyed.id).unique_key is None
    assert app.get_job(plain.id).status is pgqueue.JobStatus.QUEUED
    assert _holder(refresh, "k") == waiting.id


@pytest.mark.parametrize("send_back", SEND_BACK)
def test_jobs_of_one_key_sent_back_together_leave_it_to_the_first(
    app: pgqueue.App, conn: Conn, send_back: str
) -> None:
    @app.task
    def refresh(n: int) -> None: ...

    first = refresh.apply_async((1,), unique_key="k", unique_states=QUEUED)
    (running_first,) = _claim(conn, 1)
    second = refresh.apply_async((2,), unique_key="k", unique_states=QUEUED)
    assert second.created
    (running_second,) = _claim(conn, 1)
    SEND_BACK[send_back](conn, [running_first, running_second])
    assert app.get_job(first.id).unique_key == "k"
    assert app.get_job(second.id).unique_key is None
    assert _holder(refresh, "k") == first.id


def test_a_retry_that_meets_a_key_taken_while_it_was_written_is_written_again(
    app: pgqueue.App, conn: Conn, dsn: str, records: _Records
) -> None:
    """The retry's statement sees no job waiting under its key, puts the job back with it,
    and waits on the index for an enqueue of the key that has not committed: when it does,
    the statement fails. The completer writes the batch again, and the retry gives the key
    up; the other outcome of the batch is written too, once."""

    @app.task
    def refresh(n: int) -> None: ...

    keyed = refresh.apply_async((1,), unique_key="k", unique_states=QUEUED)
    plain = refresh.apply_async((2,))
    claimed = _claim_all(conn, 2)
    outcomes: list[Outcome] = [
        RetryLater(claimed[keyed.id], simple_error("ValueError", "again"), delay=3600),
        Succeeded(claimed[plain.id], '"done"'),
    ]
    with psycopg.connect(dsn) as enqueuer:
        taken = refresh.apply_async((3,), unique_key="k", unique_states=QUEUED, connection=enqueuer)

        def writer_waits() -> bool:
            row = conn.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event_type = 'Lock' AND query LIKE '%jsonb_to_recordset%'"
            ).fetchone()
            return row is not None and row[0] > 0

        async def commit_while_it_waits(completer: Completer) -> None:
            await _until(writer_waits, "the retry to wait for the uncommitted enqueue")
            enqueuer.commit()

        asyncio.run(_complete(app, outcomes, commit_while_it_waits))
    assert records.count("could not write 2 job outcome(s)") >= 1
    assert records.count("refused") == 0
    retried = app.get_job(keyed.id)
    assert (retried.status, retried.unique_key) == (pgqueue.JobStatus.QUEUED, None)
    assert app.get_job(plain.id).status is pgqueue.JobStatus.SUCCEEDED
    assert _holder(refresh, "k") == taken.id


def test_an_operators_retry_takes_the_key_back_only_if_no_job_waits_under_it(
    app: pgqueue.App, conn: Conn
) -> None:
    @app.task
    def noop(n: int = 0) -> None: ...

    first = noop.apply_async(unique_key="k", unique_states=QUEUED, countdown=3600)
    first.cancel()
    assert app.get_job(first.id).unique_key == "k"  # kept for the record
    second = noop.apply_async(unique_key="k", unique_states=QUEUED, countdown=3600)
    assert second.created
    assert [r.result for r in admin.retry(conn, [first.id])] == ["done"]
    assert app.get_job(first.id).unique_key is None  # the key is second's
    second.cancel()
    assert [r.result for r in admin.retry(conn, [second.id])] == ["done"]
    assert app.get_job(second.id).unique_key == "k"
    assert _holder(noop, "k") == second.id


def test_bad_states_are_refused_before_anything_is_written(app: pgqueue.App, conn: Conn) -> None:
    @app.task
    def noop() -> None: ...

    with pytest.raises(ConfigurationError, match="key_concurrency_limit=1"):
        noop.apply_async(unique_key="k", unique_states=("running",))
    with pytest.raises(ConfigurationError, match="unique_for=seconds"):
        noop.apply_async(unique_key="k", unique_states=("queued", "succeeded"))
    with pytest.raises(ConfigurationError, match="takes a tuple of states"):
        noop.apply_async(unique_key="k", unique_states="queued")
    for states in ((), ("queued", "waiting"), ("Queued",)):
        with pytest.raises(ConfigurationError, match=r'or \("queued",\)'):
            noop.apply_async(unique_key="k", unique_states=states)
    with pytest.raises(ConfigurationError, match="by string"):
        noop.apply_async(unique_key="k", unique_states=(["queued"],))  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="pass unique_key= too"):
        noop.apply_async(unique_states=QUEUED)
    with pytest.raises(ConfigurationError, match="unique_states="):
        noop.apply_async(unique_key="k", unique_states=QUEUED, link=noop.s())
    with pytest.raises(ConfigurationError, match="key_concurrency_limit=1"):

        @app.task(unique=True, unique_states=("running",))
        def runs_alone() -> None: ...

    with pytest.raises(ConfigurationError, match="need unique="):

        @pgqueue.shared_task(name="shared.noop", unique_states=QUEUED)
        def shared_noop() -> None: ...

    with pytest.raises(ConfigurationError, match="key_concurrency_limit=1"):
        asyncio.run(noop.aapply_async(unique_key="k", unique_states=("running",)))
    assert _count(conn) == 0


def test_the_schema_goes_down_to_0012_and_back_keeping_the_waiting_jobs(
    app: pgqueue.App, dsn: str
) -> None:
    @app.task
    def noop() -> None: ...

    job = noop.apply_async(unique_key="k", unique_states=QUEUED)
    app.close()
    migrate.downgrade(dsn, "0012")
    with psycopg.connect(dsn) as conn:
        assert migrate.current_revision(conn) == "0012"
        assert conn.execute("SELECT status::text FROM pgqueue_jobs").fetchall() == [("queued",)]
    migrate.upgrade(dsn)
    assert schema_diff(dsn) == []
    again = pgqueue.App(dsn)
    try:
        assert again.get_job(job.id).unique_key is None  # the key went with the column
    finally:
        again.close()
