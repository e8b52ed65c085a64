"""Fleet-wide limits, against real workers: a rate, a concurrency and a concurrency per key
hold across every worker at once, and a limited task never holds up the other jobs of its
queue."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue.errors import ConfigurationError
from pgqueue.limits import list_limits, sync_limits
from tests.conftest import WorkerThread, wait_until

StartWorker = Callable[..., WorkerThread]


def _statuses(conn: psycopg.Connection[Any], ids: list[int]) -> dict[str, int]:
    rows = conn.execute(
        "SELECT status::text, count(*) FROM pgqueue_all_jobs WHERE id = ANY(%s) GROUP BY 1",
        (ids,),
    ).fetchall()
    return dict(rows)


def _done(conn: psycopg.Connection[Any], ids: list[int]) -> bool:
    return _statuses(conn, ids).get("succeeded", 0) == len(ids)


def _intervals(conn: psycopg.Connection[Any], ids: list[int]) -> list[tuple[datetime, datetime]]:
    rows = conn.execute(
        "SELECT started_at, finished_at FROM pgqueue_finished_jobs WHERE id = ANY(%s)", (ids,)
    ).fetchall()
    return [(row[0], row[1]) for row in rows]


def _most_at_once(intervals: list[tuple[datetime, datetime]]) -> int:
    """The most intervals that overlap at one moment (an end before a start at a tie)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    most = running = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


def _most_in_a_window(starts: list[datetime], window: timedelta) -> int:
    """The most starts in any half-open window [t, t + window)."""
    starts = sorted(starts)
    most = 0
    first = 0
    for last, start in enumerate(starts):
        while starts[first] <= start - window:
            first += 1
        most = max(most, last - first + 1)
    return most


class Gate:
    """Holds the jobs of a task until opened; counts how many are held at once."""

    def __init__(self) -> None:
        self.open = threading.Event()
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    def hold(self) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            assert self.open.wait(60), "the gate was never opened"
        finally:
            with self.lock:
                self.now -= 1


# -- declarations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rate_limit": "100/min"}, "N/s, N/m or N/h"),
        ({"rate_limit": "100"}, "N/s, N/m or N/h"),
        ({"rate_limit": "1.5/s"}, "whole number"),
        ({"rate_limit": "0/s"}, "allows nothing"),
        ({"rate_limit": "20000/s"}, "most a limit can keep"),
        ({"rate_limit": "50000/h"}, "shorter period"),
        ({"rate_limit": 100}, "must be a string"),
        ({"concurrency_limit": 0}, "1 or more"),
        ({"concurrency_limit": True}, "1 or more"),
        ({"key_concurrency_limit": -1}, "1 or more"),
        ({"key_concurrency_limit": 2.0}, "1 or more"),
    ],
)
def test_a_bad_limit_is_refused_where_the_task_is_declared(
    app: pgqueue.App, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):

        @app.task(**options)
        def limited() -> None: ...

    assert not any(name.endswith("limited") for name in app.tasks)


def test_a_concurrency_key_needs_a_per_key_limit(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    @app.task(concurrency_limit=2)
    def plain() -> None: ...

    with pytest.raises(ConfigurationError, match="key_concurrency_limit=N"):
        plain.apply_async(concurrency_key="customer:7")
    with pytest.raises(ConfigurationError, match="key_concurrency_limit=N"):
        plain.delay_many([()], concurrency_key="customer:7")

    @app.task(key_concurrency_limit=1)
    def keyed() -> None: ...

    with pytest.raises(TypeError, match="non-empty string"):
        keyed.apply_async(concurrency_key=7)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="non-empty string"):
        keyed.apply_async(concurrency_key="")
    assert conn.execute("SELECT count(*) FROM pgqueue_jobs").fetchone() == (0,)


def test_limits_are_written_when_a_worker_starts_and_removed_with_the_declaration(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    @app.task(name="report", rate_limit="100/m", concurrency_limit=3, key_concurrency_limit=1)
    def report() -> None: ...

    report.apply_async(concurrency_key="customer:7")
    with psycopg.connect(dsn) as sync_conn:
        sync_limits(sync_conn, app.tasks.values())
        rows = list_limits(sync_conn)
    assert [(r["name"], r["rate"], r["per_seconds"], r["concurrency"]) for r in rows] == [
        ("report", 100, 60, 3)
    ]
    assert rows[0]["key_concurrency"] == 1 and rows[0]["queued"] == 1

    # The same task declared without limits (a new release): its row goes, and its waiting
    # job becomes a plain one.
    other = pgqueue.App(dsn)
    try:

        @other.task(name="report")
        def report_unlimited() -> None: ...

        with psycopg.connect(dsn) as sync_conn:
            sync_limits(sync_conn, other.tasks.values())
            assert list_limits(sync_conn) == []
    finally:
        other.close()
    assert conn.execute("SELECT limited FROM pgqueue_jobs").fetchall() == [(None,)]


# -- enforcement across workers ------------------------------------------------------------


def test_concurrency_limit_holds_across_workers(
    app: pgqueue.App, conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    gate = Gate()

    @app.task(concurrency_limit=2)
    def held() -> None:
        gate.hold()

    ids = [held.delay().id for _ in range(6)]
    for _ in range(3):
        start_worker(app, concurrency=4)
    wait_until(lambda: _statuses(conn, ids).get("running") == 2, what="two jobs running")
    # Every worker has claimed since (each claims at least once per poll interval): still two.
    marks = conn.execute("SELECT pg_current_wal_lsn()").fetchone()
    assert marks is not None
    wait_until(lambda: gate.now == 2, what="two jobs held")
    gate.open.set()
    wait_until(lambda: _done(conn, ids), what="every job done")
    assert gate.most == 2
    assert _most_at_once(_intervals(conn, ids)) <= 2


def test_rate_limit_holds_across_workers(
    app: pgqueue.App, conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    @app.task(rate_limit="10/s")
    def paced() -> None: ...

    ids = paced.delay_many([()] * 35)
    for _ in range(3):
        start_worker(app, concurrency=4)
    wait_until(lambda: _done(conn, ids), timeout=30, what="every job done")
    starts = [start for start, _ in _intervals(conn, ids)]
    assert _most_in_a_window(starts, timedelta(seconds=1)) <= 10
    # It kept up its rate: 35 jobs at 10 a second take a little over 3 seconds.
    assert max(starts) - min(starts) < timedelta(seconds=5)


def test_per_key_limit_passes_over_a_full_key(
    app: pgqueue.App, conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    gate = Gate()

    @app.task(key_concurrency_limit=1)
    def sync_account(customer: int) -> None:
        if customer == 7:
            gate.hold()

    seven = [sync_account.apply_async((7,), concurrency_key="customer:7").id for _ in range(5)]
    others = [
        sync_account.apply_async((n,), concurrency_key=f"customer:{n}").id for n in (8, 9, 8, 9, 10)
    ]
    for _ in range(2):
        start_worker(app, concurrency=4)
    # Customer 7's first job holds its key; every other customer's jobs run meanwhile.
    wait_until(lambda: _done(conn, others), what="the other customers' jobs done")
    assert _statuses(conn, seven) == {"running": 1, "queued": 4}
    assert gate.now == 1
    gate.open.set()
    wait_until(lambda: _done(conn, seven), what="customer 7's jobs done")
    assert gate.most == 1
    assert _most_at_once(_intervals(conn, seven)) == 1


def test_a_limited_backlog_does_not_hold_up_the_queue(
    app: pgqueue.App, conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    gate = Gate()

    @app.task(concurrency_limit=1)
    def slow() -> None:
        gate.hold()

    @app.task
    def quick(n: int) -> int:
        return n

    backlog = slow.delay_many([()] * 500)
    plain = quick.delay_many([(n,) for n in range(100)])
    start_worker(app, concurrency=4)
    start_worker(app, concurrency=4)
    wait_until(lambda: _done(conn, plain), what="the plain jobs done")
    assert _statuses(conn, backlog) == {"running": 1, "queued": 499}
    gate.open.set()


# -- every way in marks the job ----------------------------------------------------------


def _marks(conn: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT limited, concurrency_key FROM pgqueue_jobs ORDER BY id").fetchall()


def test_every_enqueue_path_marks_a_limited_job(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    @app.task(key_concurrency_limit=1)
    def keyed() -> None: ...

    @app.task
    def plain() -> None: ...

    keyed.delay()
    keyed.apply_async(concurrency_key="a", countdown=0)
    keyed.apply_async(concurrency_key="b", connection=conn)
    keyed.delay_many([(), ()], concurrency_key="c")
    keyed.delay_many([()], concurrency_key="d", headers={"trace": "x"})
    plain.delay()
    plain.delay_many([()])

    async def twins() -> None:
        await keyed.aapply_async(concurrency_key="e")
        await keyed.adelay_many([()], concurrency_key="f")
        await app.aclose()

    import asyncio

    asyncio.run(twins())
    assert _marks(conn) == [
        (True, None),
        (True, "a"),
        (True, "b"),
        (True, "c"),
        (True, "c"),
        (True, "d"),
        (None, None),
        (None, None),
        (True, "e"),
        (True, "f"),
    ]


def test_workflow_steps_of_a_limited_task_are_limited(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    @app.task(key_concurrency_limit=1)
    def keyed(*values: Any) -> None: ...

    @app.task
    def plain(*values: Any) -> None: ...

    # A chain's head, a chord's member and callback, a link and a link_error callback; a step
    # named by an app that does not register the task is limited if the fleet declared limits.
    pgqueue.chain(keyed.s().set(concurrency_key="a"), plain.s(), keyed.s()).apply_async()
    pgqueue.chord([keyed.si().set(concurrency_key="b"), plain.si()], keyed.s()).apply_async()
    keyed.apply_async(concurrency_key="c", link=plain.s(), link_error=keyed.s())
    with psycopg.connect(dsn) as sync_conn:
        sync_limits(sync_conn, app.tasks.values())
    other = pgqueue.App(dsn)
    other.signature(keyed.name, external=True).apply_async(
        link=other.signature(plain.name, external=True)
    )
    other.close()
    assert _marks(conn) == [
        (True, "a"),
        (None, None),
        (True, None),
        (True, "b"),
        (None, None),
        (True, None),
        (True, "c"),
        (None, None),
        (True, None),
        (True, None),
        (None, None),
    ]
    with pytest.raises(ConfigurationError, match="declares no per-key limit"):
        pgqueue.chain(plain.s().set(concurrency_key="x"), plain.s()).apply_async()


def test_a_limited_chord_member_waits_for_its_place_and_its_callback_still_runs(
    app: pgqueue.App, conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    gate = Gate()

    @app.task(concurrency_limit=1)
    def export(n: int) -> int:
        gate.hold()
        return n

    @app.task(concurrency_limit=1)
    def total(values: list[int]) -> int:
        return sum(values)

    flow = pgqueue.chord([export.si(n) for n in range(4)], total.s()).apply_async()
    for _ in range(2):
        start_worker(app, concurrency=4)
    wait_until(lambda: gate.now == 1, what="one member running")
    ids = [job.id for job in flow.jobs]
    assert _statuses(conn, ids) == {"running": 1, "queued": 3, "waiting": 1}
    gate.open.set()
    assert flow.wait(timeout=30) == 6
    assert gate.most == 1
    assert _most_at_once(_intervals(conn, ids[:4])) == 1


def test_a_periodic_job_of_a_limited_task_is_limited(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any]
) -> None:
    from pgqueue.periodic import db_now, run_now, sync_schedules

    @app.periodic(every=3600, name="hourly-report")
    @app.task(concurrency_limit=1)
    def report() -> None: ...

    with psycopg.connect(dsn) as sync_conn:
        sync_schedules(sync_conn, app.schedules.values(), db_now(sync_conn), app.tasks)
        sync_conn.commit()
        run_now(sync_conn, app, "hourly-report")
        sync_conn.commit()
    assert _marks(conn) == [(True, None)]


def test_drain_runs_limited_jobs(app: pgqueue.App, conn: psycopg.Connection[Any]) -> None:
    from pgqueue.testing import drain

    @app.task(rate_limit="1/h", key_concurrency_limit=1)
    def rare(n: int) -> int:
        return n

    ids = [rare.apply_async((n,), concurrency_key="k").id for n in range(3)]
    ran = drain(app)
    assert sorted(r.id for r in ran) == ids
    assert _done(conn, ids)


def test_a_retried_job_keeps_its_key_and_its_limit(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    from pgqueue import admin
    from pgqueue.cli import main
    from pgqueue.testing import drain

    @app.task(key_concurrency_limit=1, max_attempts=1)
    def flaky() -> None:
        raise RuntimeError("down")

    job = flaky.apply_async(concurrency_key="customer:7")
    with psycopg.connect(dsn) as sync_conn:
        sync_limits(sync_conn, app.tasks.values())
    drain(app)
    assert conn.execute(
        "SELECT status::text, concurrency_key FROM pgqueue_finished_jobs WHERE id = %s", (job.id,)
    ).fetchone() == ("failed", "customer:7")
    admin.retry(conn, [job.id])
    assert _marks(conn) == [(True, "customer:7")]
    assert main(["jobs", "show", str(job.id), "--dsn", dsn]) == 0
    assert "  concurrency key    customer:7" in capsys.readouterr().out.splitlines()


def test_pgqueue_limits_lists_each_limit_and_what_it_holds(
    app: pgqueue.App, dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from pgqueue.cli import main

    assert main(["limits", "--dsn", dsn]) == 0
    assert "no task declares a limit" in capsys.readouterr().out

    @app.task(name="sync_account", rate_limit="100/m", key_concurrency_limit=1)
    def sync_account() -> None: ...

    @app.task(name="export", concurrency_limit=2)
    def export() -> None: ...

    sync_account.apply_async(concurrency_key="customer:7")
    with psycopg.connect(dsn) as sync_conn:
        sync_limits(sync_conn, app.tasks.values())
    assert main(["limits", "--dsn", dsn]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "task", "rate", "started", "in", "period", "concurrency", "per", "key", "running",
        "queued",
    ]  # fmt: skip
    assert lines[1].split() == ["export", "-", "-", "2", "-", "0", "0"]
    assert lines[2].split() == ["sync_account", "100/m", "0", "-", "1", "0", "1"]
    assert main(["limits", "--dsn", dsn, "--json"]) == 0
    assert '"name": "sync_account"' in capsys.readouterr().out


def test_a_paused_queue_holds_its_limited_jobs_too(
    app: pgqueue.App, conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    from pgqueue import admin

    @app.task(concurrency_limit=5)
    def limited() -> None: ...

    @app.task(queue="other")
    def elsewhere() -> None: ...

    admin.pause(conn, "default")
    held = limited.delay_many([()] * 3)
    start_worker(app, concurrency=4, queues=("default", "other"))
    # A job of the other queue done: the worker has claimed, limited jobs first, since.
    other = elsewhere.delay().id
    wait_until(lambda: _done(conn, [other]), what="the other queue's job done")
    assert _statuses(conn, held) == {"queued": 3}
    admin.resume(conn, "default")
    wait_until(lambda: _done(conn, held), what="every job done once resumed")


def test_the_claim_of_plain_jobs_reads_no_limited_job(
    app: pgqueue.App, conn: psycopg.Connection[Any]
) -> None:
    from pgqueue import queries
    from pgqueue.claim import claim_params

    @app.task(concurrency_limit=1)
    def limited() -> None: ...

    limited.delay_many([()] * 2000)
    plan = conn.execute(
        "EXPLAIN (ANALYZE, FORMAT JSON) " + queries.CLAIM_JOBS,
        claim_params(["default"], 10, worker_id=1),
    ).fetchone()
    assert plan is not None

    def nodes(node: dict[str, Any]) -> list[dict[str, Any]]:
        return [node, *(n for child in node.get("Plans", []) for n in nodes(child))]

    read = [
        (n.get("Index Name"), n["Actual Rows"], n.get("Rows Removed by Filter", 0))
        for n in nodes(plan[0][0]["Plan"])
        if n.get("Relation Name") == "pgqueue_jobs"
    ]
    # The claimable index holds no limited job: nothing is read, nothing filtered out.
    assert read and all(rows == 0 and removed == 0 for _, rows, removed in read), read
