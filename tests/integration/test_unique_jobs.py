"""Unique jobs: a key held by one queued or running job at most, by a unique index, whoever
enqueues it and however (delay, delay_many, in the caller's transaction, async, from 8 processes
at once); the replace option; periods that outlive the job; bad input refused, nothing written."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

import pgqueue
from pgqueue import admin, migrate
from pgqueue.cli import main
from pgqueue.errors import ConfigurationError
from pgqueue.hooks import Enqueueing
from tests.conftest import wait_until

Conn = psycopg.Connection[Any]


def _jobs(conn: Conn, key: str | None = None) -> list[tuple[Any, ...]]:
    """(id, status, args, kwargs) of every job, in both tables, by id; of one key if given."""
    where = "WHERE unique_key = %(key)s" if key is not None else ""
    return conn.execute(
        f"SELECT id, status::text, args, kwargs FROM pgqueue_all_jobs {where} ORDER BY id",
        {"key": key},
    ).fetchall()


def _count(conn: Conn) -> int:
    row = conn.execute("SELECT count(*) FROM pgqueue_all_jobs").fetchone()
    assert row is not None
    return int(row[0])


# -- a key held by a queued or running job ---------------------------------------------------


def test_a_duplicate_returns_the_job_holding_the_key_and_inserts_nothing(
    app: pgqueue.App, conn: Conn
) -> None:
    @app.task
    def send_invoice(invoice_id: int) -> None: ...

    first = send_invoice.apply_async(args=(42,), unique_key="invoice:42")
    assert first.created and not first.duplicate and not first.replaced
    assert first.unique_key == "invoice:42"
    again = send_invoice.apply_async(args=(43,), unique_key="invoice:42", countdown=60)
    assert again.id == first.id
    assert again.duplicate and not again.created and not again.replaced
    assert again.args == [42] and again.status is pgqueue.JobStatus.QUEUED
    other = send_invoice.apply_async(args=(7,), unique_key="invoice:7")
    assert other.created and other.id != first.id
    assert _jobs(conn) == [(first.id, "queued", [42], {}), (other.id, "queued", [7], {})]
    assert app.get_job(first.id).unique_key == "invoice:42"


def test_the_key_frees_itself_when_the_job_ends(
    app: pgqueue.App, conn: Conn, start_worker: Any
) -> None:
    release = threading.Event()

    @app.task
    def report(n: int) -> int:
        release.wait(10)
        return n

    first = report.apply_async(args=(1,), unique_key="report")
    start_worker(app, concurrency=1)
    wait_until(lambda: app.get_job(first.id).status is pgqueue.JobStatus.RUNNING, what="running")
    # Running: the key is still held, and replace leaves a running job alone.
    while_running = report.apply_async(args=(2,), unique_key="report", on_conflict="replace")
    assert while_running.id == first.id and while_running.duplicate
    assert not while_running.replaced and while_running.status is pgqueue.JobStatus.RUNNING
    assert app.get_job(first.id).args == [1]
    release.set()
    assert first.wait(timeout=15) == 1
    second = report.apply_async(args=(3,), unique_key="report")
    assert second.created and second.id != first.id
    assert second.wait(timeout=15) == 3
    # A cancelled job frees its key too, and both ended jobs keep it for the record.
    third = report.apply_async(args=(4,), unique_key="report", countdown=3600)
    third.cancel()
    assert report.apply_async(args=(5,), unique_key="report", countdown=3600).created
    assert [row[1] for row in _jobs(conn, "report")] == [
        "succeeded",
        "succeeded",
        "cancelled",
        "queued",
    ]


def test_replace_gives_the_queued_job_the_new_arguments_and_due_time(
    app: pgqueue.App, conn: Conn
) -> None:
    @app.task
    def reindex(user_id: int, reason: str = "") -> None: ...

    first = reindex.apply_async(args=(1,), unique_key="reindex:1", countdown=30)
    later = reindex.apply_async(
        args=(1,),
        kwargs={"reason": "edited"},
        unique_key="reindex:1",
        countdown=600,
        priority=5,
        headers={"by": "debounce"},
        on_conflict="replace",
    )
    assert later.id == first.id and later.replaced and later.duplicate
    assert later.kwargs == {"reason": "edited"} and later.priority == 5
    assert later.headers == {"by": "debounce"}
    assert first.run_at is not None and later.run_at is not None
    assert later.run_at - first.run_at >= timedelta(seconds=560)
    stored = app.get_job(first.id)
    assert (stored.kwargs, stored.run_at, stored.priority) == (
        {"reason": "edited"},
        later.run_at,
        5,
    )
    assert _count(conn) == 1


def test_replace_inserts_when_no_job_holds_the_key(app: pgqueue.App) -> None:
    @app.task(unique=True, on_conflict="replace")
    def touch(item: str) -> None: ...

    job = touch.delay("a")
    assert job.created and not job.replaced


# -- keys made from the arguments ------------------------------------------------------------


def test_unique_true_makes_the_key_from_the_task_and_every_argument(
    app: pgqueue.App, conn: Conn
) -> None:
    @app.task(unique=True, name="billing.charge")
    def charge(customer_id: int, amount: int = 5, **extra: Any) -> None: ...

    first = charge.delay(7)
    assert first.unique_key == 'billing.charge:{"amount":5,"customer_id":7,"extra":{}}'
    # The same call spelled otherwise (keywords, the default given) is the same key.
    assert charge.delay(customer_id=7).id == first.id
    assert charge.apply_async(args=(7, 5)).id == first.id
    assert charge.apply_async(kwargs={"amount": 5, "customer_id": 7}).id == first.id
    assert charge.delay(7, 6).created
    assert charge.delay(7, note="x").created
    assert _count(conn) == 3


def test_unique_names_make_the_key_from_those_arguments_only(app: pgqueue.App) -> None:
    @app.task(unique=("customer_id",), name="sync")
    def sync_customer(customer_id: int, full: bool = False) -> None: ...

    first = sync_customer.delay(7)
    assert first.unique_key == 'sync:{"customer_id":7}'
    assert sync_customer.delay(7, full=True).duplicate
    assert sync_customer.delay(8).created


def test_a_key_function_returns_the_key_itself(app: pgqueue.App) -> None:
    @app.task(unique=lambda order, **_: f"order:{order['id']}")
    def ship(order: dict[str, Any], express: bool = False) -> None: ...

    first = ship.delay({"id": 3, "lines": 2})
    assert first.unique_key == "order:3"
    assert ship.delay({"id": 3, "lines": 9}, express=True).id == first.id


def test_a_bound_task_makes_its_key_without_self(app: pgqueue.App) -> None:
    @app.task(bind=True, unique=True, name="bound")
    def bound(self: Any, n: int) -> None: ...

    assert bound.delay(1).unique_key == 'bound:{"n":1}'
    assert bound.delay(n=1).duplicate


def test_unique_key_at_enqueue_overrides_the_tasks_key(app: pgqueue.App) -> None:
    @app.task(unique=True)
    def job(n: int) -> None: ...

    assert job.apply_async(args=(1,), unique_key="mine").unique_key == "mine"
    assert job.apply_async(args=(2,), unique_key="mine").duplicate


def test_long_arguments_make_a_digest_key(app: pgqueue.App) -> None:
    @app.task(unique=True, name="big")
    def big(text: str) -> None: ...

    job = big.delay("x" * 5000)
    assert job.unique_key is not None and job.unique_key.startswith("big:sha256:")
    assert big.delay("x" * 5000).duplicate
    assert big.delay("y" * 5000).created


# -- unique_for: a period that outlives the job ----------------------------------------------


def test_unique_for_holds_the_key_after_the_job_ended_until_the_period_runs_out(
    app: pgqueue.App, conn: Conn
) -> None:
    @app.task(unique=True, unique_for=timedelta(hours=1))
    def digest(user_id: int) -> None: ...

    first = digest.delay(1)
    assert first.created
    first.cancel()
    again = digest.delay(1)
    assert again.duplicate and again.id == first.id
    assert again.status is pgqueue.JobStatus.CANCELLED
    assert digest.delay(2).created
    # The hour passes (its end moved back rather than waited for).
    conn.execute("UPDATE pgqueue_unique_periods SET until = now() - interval '1 second'")
    after = digest.delay(1)
    assert after.created and after.id != first.id
    assert digest.delay(1).id == after.id


def test_a_job_running_past_its_period_still_holds_its_key(app: pgqueue.App, conn: Conn) -> None:
    @app.task
    def export() -> None: ...

    first = export.apply_async(unique_key="export", unique_for=60)
    conn.execute("UPDATE pgqueue_unique_periods SET until = now() - interval '1 second'")
    second = export.apply_async(unique_key="export", unique_for=60)
    assert second.duplicate and second.id == first.id
    assert _count(conn) == 1
    # That duplicate enqueued nothing, so it holds no period: once the job ends, the key is free.
    first.cancel()
    third = export.apply_async(unique_key="export", unique_for=60)
    assert third.created
    assert export.apply_async(unique_key="export", unique_for=60).id == third.id


def test_a_period_whose_job_was_deleted_holds_nothing(app: pgqueue.App, conn: Conn) -> None:
    @app.task
    def export() -> None: ...

    first = export.apply_async(unique_key="export", unique_for=3600)
    first.cancel()
    assert [r.result for r in admin.delete(conn, [first.id])] == ["done"]
    assert export.apply_async(unique_key="export", unique_for=3600).created


def test_periods_are_pruned_with_finished_jobs(app: pgqueue.App, conn: Conn) -> None:
    from pgqueue.maintenance import prune_finished_jobs_sync

    @app.task
    def export() -> None: ...

    export.apply_async(unique_key="a", unique_for=1)
    export.apply_async(unique_key="b", unique_for=3600)
    conn.execute(
        "UPDATE pgqueue_unique_periods SET until = now() - interval '2 days' WHERE unique_key = 'a'"
    )
    prune_finished_jobs_sync(conn, older_than=86400)
    rows = conn.execute("SELECT unique_key FROM pgqueue_unique_periods").fetchall()
    assert rows == [("b",)]


# -- bad input: refused before anything is written -------------------------------------------


def test_bad_keys_are_refused_and_write_nothing(app: pgqueue.App, conn: Conn) -> None:
    @app.task
    def noop() -> None: ...

    with pytest.raises(TypeError, match="unique_key must be a string"):
        noop.apply_async(unique_key=42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="must not be empty"):
        noop.apply_async(unique_key="  ")
    with pytest.raises(ConfigurationError, match="the limit is 512"):
        noop.apply_async(unique_key="k" * 513)
    with pytest.raises(ConfigurationError, match="NUL"):
        noop.apply_async(unique_key="a\x00b")
    with pytest.raises(ConfigurationError, match="lone surrogate"):
        noop.apply_async(unique_key="a\udc80")
    with pytest.raises(ConfigurationError, match='on_conflict must be "keep" or "replace"'):
        noop.apply_async(unique_key="k", on_conflict="update")
    with pytest.raises(ConfigurationError, match="cannot be combined with unique_for"):
        noop.apply_async(unique_key="k", unique_for=10, on_conflict="replace")
    with pytest.raises(ConfigurationError, match="positive number of seconds"):
        noop.apply_async(unique_key="k", unique_for=0)
    with pytest.raises(ConfigurationError, match="at most"):
        noop.apply_async(unique_key="k", unique_for=1e300)
    with pytest.raises(TypeError, match="seconds or a timedelta"):
        noop.apply_async(unique_key="k", unique_for="1h")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="pass unique_key= too"):
        noop.apply_async(unique_for=10)
    with pytest.raises(TypeError, match="cannot be stored as JSON"):
        noop.apply_async(args=(object(),), unique_key="k")
    assert _count(conn) == 0


def test_tasks_that_cannot_make_a_key_are_refused_when_declared(app: pgqueue.App) -> None:
    with pytest.raises(ConfigurationError, match="has no argument 'user'"):

        @app.task(unique=("user",))
        def one(user_id: int) -> None: ...

    with pytest.raises(ConfigurationError, match=r"collects several \(\*args or \*\*kwargs\)"):

        @app.task(unique=("rest",))
        def two(*rest: int) -> None: ...

    with pytest.raises(ConfigurationError, match="unique= takes True"):

        @app.task(unique="user_id")
        def three(user_id: int) -> None: ...

    with pytest.raises(ConfigurationError, match="need unique= to say how the key is made"):

        @app.task(unique_for=60)
        def four(user_id: int) -> None: ...

    with pytest.raises(ConfigurationError, match="cannot be combined with unique_for"):

        @app.task(unique=True, unique_for=60, on_conflict="replace")
        def five(user_id: int) -> None: ...

    assert app.tasks == {}


def test_arguments_that_do_not_fit_or_a_bad_key_function_write_nothing(
    app: pgqueue.App, conn: Conn
) -> None:
    @app.task(unique=True)
    def takes_one(a: int) -> None: ...

    @app.task(unique=("b",))
    def takes_kwargs(a: int, **more: Any) -> None: ...

    @app.task(unique=lambda a: a)
    def keyed_by_int(a: Any) -> None: ...

    with pytest.raises(ConfigurationError, match="do not fit the function"):
        takes_one.delay(1, 2)
    with pytest.raises(ConfigurationError, match="argument 'b' was not given"):
        takes_kwargs.delay(1)
    assert takes_kwargs.delay(1, b=2).unique_key is not None
    with pytest.raises(TypeError, match="must return a string key, got int"):
        keyed_by_int.delay(1)
    with pytest.raises(ConfigurationError, match="must not be empty"):
        keyed_by_int.delay("")
    with pytest.raises(ConfigurationError, match="do not fit the function"):
        takes_one.delay_many([(1,), (1, 2)])
    assert _count(conn) == 1


# -- delay_many --------------------------------------------------------------------------------


def test_delay_many_writes_one_job_per_key_in_the_batch_and_against_existing_jobs(
    app: pgqueue.App, conn: Conn
) -> None:
    @app.task(unique=("n",))
    def fetch(n: int, attempt: int = 0) -> None: ...

    existing = fetch.delay(2)
    ids = fetch.delay_many([(1,), (2, 1), {"n": 3}, (1, 9), (4,)])
    assert ids[1] == existing.id
    assert ids[0] == ids[3]
    assert len(set(ids)) == 4
    # The first call of a key is the one written.
    args_by_id = {row[0]: (row[2], row[3]) for row in _jobs(conn)}
    assert args_by_id[ids[0]] == ([1], {})
    assert args_by_id[ids[2]] == ([], {"n": 3})
    assert _count(conn) == 4


def test_delay_many_with_replace_keeps_the_last_call_of_each_key(
    app: pgqueue.App, conn: Conn
) -> None:
    @app.task(unique=("n",), on_conflict="replace")
    def fetch(n: int, version: int) -> None: ...

    existing = fetch.delay(1, 0)
    ids = fetch.delay_many([(1, 1), (2, 1), (1, 2), (2, 2), (3, 1)])
    assert ids[0] == ids[2] == existing.id and ids[1] == ids[3]
    assert sorted((row[2][0], row[2][1]) for row in _jobs(conn)) == [(1, 2), (2, 2), (3, 1)]


def test_delay_many_keeps_keys_with_backslashes_and_quotes_intact(
    app: pgqueue.App, conn: Conn
) -> None:
    @app.task(unique=True)
    def path(p: str) -> None: ...

    ids = path.delay_many([('C:\\temp\\"x"',), ("tab\there",), ('C:\\temp\\"x"',)])
    assert ids[0] == ids[2] and len(set(ids)) == 2
    assert sorted(row[2][0] for row in _jobs(conn)) == ['C:\\temp\\"x"', "tab\there"]
    assert path.delay('C:\\temp\\"x"').id == ids[0]


def test_delay_many_honours_periods_in_the_caller_transaction(
    app: pgqueue.App, dsn: str, conn: Conn
) -> None:
    @app.task(unique=True, unique_for=3600)
    def digest(user: int) -> None: ...

    first = digest.delay(1)
    first.cancel()
    with psycopg.connect(dsn) as tx:
        ids = digest.delay_many([(1,), (2,), (2,), (3,)], connection=tx)
        tx.commit()
    assert ids[0] == first.id and ids[1] == ids[2] and len(set(ids)) == 3
    assert digest.delay_many([(3,), (2,)]) == [ids[3], ids[1]]
    assert _count(conn) == 3


def test_delay_many_of_a_plain_task_still_copies(app: pgqueue.App, conn: Conn) -> None:
    @app.task
    def noop(n: int) -> None: ...

    assert len(set(noop.delay_many([(1,), (1,)]))) == 2


# -- in the caller's transaction -------------------------------------------------------------


def test_in_one_transaction_a_key_is_taken_once_and_rolled_back_with_it(
    app: pgqueue.App, dsn: str, conn: Conn
) -> None:
    @app.task
    def noop() -> None: ...

    with psycopg.connect(dsn) as tx:
        first = noop.apply_async(unique_key="k", connection=tx)
        second = noop.apply_async(unique_key="k", connection=tx)
        assert first.created and second.duplicate and second.id == first.id
        assert _count(conn) == 0
        tx.rollback()
    assert _count(conn) == 0
    assert noop.apply_async(unique_key="k").created


def _wait_for_lock(conn: Conn, pid: int) -> None:
    wait_until(
        lambda: (
            conn.execute(
                "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone()
            == (True,)
        ),
        what="the second enqueue to wait for the first transaction",
    )


@pytest.mark.parametrize("outcome", ["commit", "rollback"])
@pytest.mark.parametrize("period", [None, 60.0])
def test_an_enqueue_waits_for_an_uncommitted_job_holding_the_key(
    app: pgqueue.App, dsn: str, conn: Conn, outcome: str, period: float | None
) -> None:
    @app.task
    def noop(n: int) -> None: ...

    with psycopg.connect(dsn) as holder, psycopg.connect(dsn) as waiter:
        held = noop.apply_async(args=(1,), unique_key="k", unique_for=period, connection=holder)
        result: list[pgqueue.Job] = []
        thread = threading.Thread(
            target=lambda: result.append(
                noop.apply_async(args=(2,), unique_key="k", unique_for=period, connection=waiter)
            )
        )
        thread.start()
        _wait_for_lock(conn, waiter.info.backend_pid)
        getattr(holder, outcome)()
        thread.join(15)
        assert not thread.is_alive()
        waiter.commit()
    (job,) = result
    if outcome == "commit":
        assert job.duplicate and job.id == held.id and job.args == [1]
    else:
        assert job.created and job.args == [2]
    assert [row[2] for row in _jobs(conn)] == ([[1]] if outcome == "commit" else [[2]])


def test_repeatable_read_meets_a_key_committed_after_its_snapshot_as_a_serialization_failure(
    app: pgqueue.App, dsn: str
) -> None:
    @app.task
    def noop() -> None: ...

    with psycopg.connect(dsn) as tx:
        tx.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        tx.execute("SELECT 1")  # the snapshot is taken
        noop.apply_async(unique_key="k")
        with pytest.raises(psycopg.errors.SerializationFailure):
            noop.apply_async(unique_key="k", connection=tx)


def test_a_sqlalchemy_session_enqueues_unique_jobs_in_its_transaction(
    app: pgqueue.App, dsn: str, conn: Conn
) -> None:
    @app.task(unique=True)
    def noop(n: int) -> None: ...

    engine = migrate.engine_for(dsn)
    try:
        with Session(engine) as session, session.begin():
            session.execute(sa.text("SELECT 1"))
            first = noop.apply_async(args=(1,), connection=session)
            assert noop.apply_async(args=(1,), connection=session).id == first.id
            ids = noop.delay_many([(1,), (2,)], connection=session)
            assert ids[0] == first.id
    finally:
        engine.dispose()
    assert _count(conn) == 2


# -- async twins -------------------------------------------------------------------------------


def test_async_twins_honour_the_key(app: pgqueue.App, dsn: str, conn: Conn) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    @app.task(unique=("n",))
    async def fetch(n: int, v: int = 0) -> None: ...

    async def scenario() -> None:
        first = await fetch.adelay(1)
        assert first.created
        assert (await fetch.aapply_async(args=(1, 2))).id == first.id
        replaced = await fetch.aapply_async(args=(1, 3), on_conflict="replace")
        assert replaced.replaced and replaced.args == [1, 3]
        async with await psycopg.AsyncConnection.connect(dsn) as tx:
            in_tx = await fetch.aapply_async(args=(2,), connection=tx)
            assert (await fetch.aapply_async(args=(2,), connection=tx)).id == in_tx.id
            ids = await fetch.adelay_many([(2,), (3,), (3,)], connection=tx)
            assert ids[0] == in_tx.id and ids[1] == ids[2]
            await tx.commit()
        assert (await fetch.adelay_many([(1,), (4,)]))[0] == first.id
        engine = create_async_engine(
            "postgresql+psycopg_async://",
            async_creator=lambda: psycopg.AsyncConnection.connect(dsn),
        )
        try:
            async with AsyncSession(engine) as session, session.begin():
                job = await fetch.aapply_async(args=(5,), connection=session)
                assert (await fetch.aapply_async(args=(5,), connection=session)).id == job.id
        finally:
            await engine.dispose()

    asyncio.run(scenario())
    assert _count(conn) == 5


def test_concurrent_coroutines_on_pgqueues_async_connection_make_one_job_per_key(
    app: pgqueue.App, conn: Conn
) -> None:
    @app.task
    async def noop(n: int) -> None: ...

    async def scenario() -> list[pgqueue.Job]:
        keyed = [noop.aapply_async(args=(n,), unique_key="k", unique_for=60) for n in range(10)]
        plain = [noop.adelay(n) for n in range(10)]
        return await asyncio.gather(*keyed, *plain)

    jobs = asyncio.run(scenario())
    assert len({job.id for job in jobs[:10]}) == 1
    assert sum(job.created for job in jobs[:10]) == 1
    assert _count(conn) == 11


# -- 8 processes at once ---------------------------------------------------------------------


def _enqueue_in_own_transaction(dsn: str, mode: str, barrier: Any, results: Any) -> None:
    app = pgqueue.App(dsn)

    @app.task(name="race.noop")
    def noop(n: int) -> None: ...

    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT 1")  # the transaction is open before the race starts
        barrier.wait(30)
        job = noop.apply_async(
            args=(conn.info.backend_pid,),
            unique_key="race",
            unique_for=60 if mode == "period" else None,
            on_conflict="replace" if mode == "replace" else None,
            connection=conn,
        )
        conn.commit()
    app.close()
    results.put((job.id, job.created, job.replaced))


@pytest.fixture
def fork() -> Iterator[Any]:
    yield multiprocessing.get_context("fork")


@pytest.mark.parametrize("mode", ["keep", "period", "replace"])
def test_eight_processes_enqueueing_one_key_at_once_make_one_job(
    dsn: str, conn: Conn, fork: Any, mode: str
) -> None:
    barrier = fork.Barrier(8)
    results = fork.Queue()
    processes = [
        fork.Process(target=_enqueue_in_own_transaction, args=(dsn, mode, barrier, results))
        for _ in range(8)
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(30)
        assert process.exitcode == 0
    assert len({job_id for job_id, _, _ in outcomes}) == 1
    assert sorted(created for _, created, _ in outcomes) == [False] * 7 + [True]
    # With replace, each later enqueue gave the queued job its arguments.
    assert all(replaced == (mode == "replace" and not created) for _, created, replaced in outcomes)
    assert _count(conn) == 1


# -- enqueue hooks -----------------------------------------------------------------------------


def test_enqueue_hooks_see_keyed_jobs_and_their_headers_are_written(app: pgqueue.App) -> None:
    seen: list[Enqueueing] = []

    @contextlib.contextmanager
    def stamp(enqueueing: Enqueueing) -> Iterator[None]:
        enqueueing.headers["origin"] = "web-1"
        seen.append(enqueueing)
        yield

    @app.task(unique=True)
    def send(n: int) -> None: ...

    app.add_enqueue_hook(stamp)
    job = send.delay(1)
    again = send.delay(1)
    ids = send.delay_many([(1,), (2,)])
    assert job.headers == {"origin": "web-1"} and again.id == job.id
    assert app.get_job(ids[1]).headers == {"origin": "web-1"}
    assert [(e.count, e.job_ids) for e in seen] == [(1, [job.id]), (1, [job.id]), (2, ids)]


# -- operators ---------------------------------------------------------------------------------


def test_an_operators_retry_takes_the_key_back_only_if_it_is_free(
    app: pgqueue.App, conn: Conn
) -> None:
    @app.task
    def noop() -> None: ...

    first = noop.apply_async(unique_key="k", countdown=3600)
    first.cancel()
    second = noop.apply_async(unique_key="k", countdown=3600)
    assert [r.result for r in admin.retry(conn, [first.id])] == ["done"]
    assert app.get_job(first.id).unique_key is None  # the key is second's
    second.cancel()
    third_try = noop.apply_async(unique_key="k", countdown=3600)
    third_try.cancel()
    retried = admin.retry(conn, [second.id, third_try.id])
    assert [r.result for r in retried] == ["done", "done"]
    assert app.get_job(second.id).unique_key == "k"  # the first of the batch takes it back
    assert app.get_job(third_try.id).unique_key is None
    assert noop.apply_async(unique_key="k").id == second.id


def test_jobs_show_prints_the_key(
    app: pgqueue.App, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    @app.task
    def noop() -> None: ...

    job = noop.apply_async(unique_key="invoice:42")
    plain = noop.delay()
    assert main(["jobs", "show", str(job.id), "--dsn", dsn]) == 0
    assert "unique key         invoice:42" in capsys.readouterr().out
    assert main(["jobs", "show", str(plain.id), "--dsn", dsn]) == 0
    assert "unique key" not in capsys.readouterr().out
    assert main(["jobs", "show", str(job.id), "--dsn", dsn, "--json"]) == 0
    assert '"unique_key": "invoice:42"' in capsys.readouterr().out


def test_a_unique_job_of_a_limited_task_is_limited_and_keeps_its_concurrency_key(
    app: pgqueue.App, conn: Conn
) -> None:
    @app.task(unique=True, rate_limit="5/s", key_concurrency_limit=1)
    def sync(customer: int) -> None: ...

    @app.task(rate_limit="5/s")
    def limited(x: int) -> None: ...

    def marks() -> list[tuple[Any, ...]]:
        return conn.execute(
            "SELECT unique_key IS NOT NULL, limited, concurrency_key FROM pgqueue_jobs ORDER BY id"
        ).fetchall()

    first = sync.apply_async((7,), concurrency_key="customer:7")
    again = sync.apply_async((7,), concurrency_key="customer:7")
    assert (again.id, again.created) == (first.id, False)
    limited.apply_async((1,), unique_key="k", unique_for=60)
    sync.delay_many([(8,), (9,), (8,)], concurrency_key="batch")
    replaced = limited.apply_async((2,), unique_key="r", on_conflict="replace")
    limited.apply_async((3,), unique_key="r", on_conflict="replace")
    assert marks() == [
        (True, True, "customer:7"),
        (True, True, None),
        (True, True, "batch"),
        (True, True, "batch"),
        (True, True, None),
    ]
    assert conn.execute(
        "SELECT args FROM pgqueue_jobs WHERE id = %s", (replaced.id,)
    ).fetchone() == ([3],)
