"""Claiming ahead: a worker whose jobs end quickly claims more than its free slots and holds the
rest, each slot taking its next job as it frees. A held job is still this worker's claim in
the database: the stray check leaves it alone, a cancel request ends it CANCELLED without
running it, and it goes back to the queue, its attempt refunded, when the worker stops or when
it has been held for AHEAD_HOLD (the jobs before it turned slow)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue import worker as worker_module
from pgqueue.config import WorkerSettings
from pgqueue.maintenance import jobs_held_by
from pgqueue.worker import Worker
from tests.conftest import WorkerThread, wait_until

StartWorker = Callable[..., WorkerThread]


def _rows(conn: psycopg.Connection[Any], ids: list[int]) -> dict[int, tuple[str, int]]:
    """Each job's status and attempts, wherever it is."""
    rows = conn.execute(
        "SELECT id, status::text, attempts FROM pgqueue_jobs WHERE id = ANY(%(ids)s)"
        " UNION ALL SELECT id, status::text, attempts FROM pgqueue_finished_jobs"
        " WHERE id = ANY(%(ids)s)",
        {"ids": ids},
    ).fetchall()
    return {job_id: (status, attempts) for job_id, status, attempts in rows}


class Held:
    """A worker of one slot whose recent jobs were quick, running a job that waits on a gate,
    with quick jobs claimed in the same claim and held behind it."""

    def __init__(self, app: pgqueue.App, dsn: str, start_worker: StartWorker) -> None:
        self.gate = threading.Event()
        self.blocking = threading.Event()
        self.ran: list[int] = []

        @app.task
        def quick(n: int) -> int:
            self.ran.append(n)
            return n

        @app.task
        def blocker() -> None:
            self.blocking.set()
            assert self.gate.wait(30)

        self.worker: Worker = start_worker(app, concurrency=1).worker
        # Quick jobs first: the worker learns its jobs are short.
        app.wait_all(
            [app.get_job(job_id) for job_id in quick.delay_many([(n,) for n in range(-20, 0)])],
            timeout=15,
        )
        assert self.worker._ahead_wanted() == WorkerSettings.claim_ahead
        self.ran.clear()
        with psycopg.connect(dsn) as tx:  # one claim finds them all
            self.blocker = blocker.apply_async(connection=tx)
            self.ids = quick.delay_many([(n,) for n in range(4)], connection=tx)
        self.quick = [app.get_job(job_id) for job_id in self.ids]
        assert self.blocking.wait(15)
        wait_until(lambda: len(self.worker._ahead) == 4, what="4 jobs held ahead")


@pytest.fixture(autouse=True)
def patient(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker here holds what its slot gets through in a second, not 50 ms: on a loaded
    machine, a no-op job can take longer than the 12.5 ms that 4 held jobs a slot need."""
    monkeypatch.setattr(worker_module, "AHEAD_SECONDS", 1.0)


@pytest.fixture
def kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """Held jobs are kept for as long as the test needs (never given back for waiting)."""
    monkeypatch.setattr(worker_module, "AHEAD_HOLD", 60.0)


@pytest.fixture
def held(app: pgqueue.App, dsn: str, start_worker: StartWorker, kept: None) -> Iterator[Held]:
    setup = Held(app, dsn, start_worker)
    try:
        yield setup
    finally:
        setup.gate.set()


def test_a_worker_of_short_jobs_claims_ahead_and_runs_each_job_once(
    app: pgqueue.App, conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    @app.task
    def quick(n: int) -> int:
        return n

    worker = start_worker(app, concurrency=2).worker
    quick.delay_many([(n,) for n in range(600)])
    wait_until(
        lambda: conn.execute("SELECT count(*) FROM pgqueue_finished_jobs").fetchone() == (600,),
        timeout=60,
        what="600 jobs ended",
    )
    assert conn.execute(
        "SELECT count(*) FROM pgqueue_finished_jobs WHERE status = 'succeeded' AND attempts = 1"
    ).fetchone() == (600,)
    # Claims for the 2 free slots alone would be 300 or more (2 jobs each at most).
    assert worker.observations._claims < 250
    assert worker._ahead_wanted() == 2 * WorkerSettings.claim_ahead


def test_jobs_held_behind_a_slow_one_go_back_to_the_queue_unrun_and_run_once_later(
    app: pgqueue.App,
    dsn: str,
    conn: psycopg.Connection[Any],
    start_worker: StartWorker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(worker_module, "AHEAD_HOLD", 2.0)  # room to see them held first
    held = Held(app, dsn, start_worker)
    try:
        # Held past AHEAD_HOLD: given back, their attempt refunded; the worker, its slot busy
        # and its jobs no longer known to be short, holds nothing more.
        wait_until(
            lambda: set(_rows(conn, held.ids).values()) == {("queued", 0)},
            what="held jobs given back",
        )
        assert held.ran == []
        assert not held.worker._ahead and held.worker._ahead_wanted() == 0
    finally:
        held.gate.set()
    assert held.blocker.wait(timeout=15) is None
    for job in held.quick:
        job.wait(timeout=15)
    assert sorted(held.ran) == [0, 1, 2, 3]
    assert set(_rows(conn, held.ids).values()) == {("succeeded", 1)}


def test_a_held_job_cancelled_on_request_ends_cancelled_without_running(
    held: Held, conn: psycopg.Connection[Any]
) -> None:
    first = held.quick[0]
    assert first.cancel("not needed") is True
    wait_until(
        lambda: _rows(conn, [first.id]) == {first.id: ("cancelled", 1)}, what="held job cancelled"
    )
    held.gate.set()
    for job in held.quick[1:]:
        job.wait(timeout=15)
    assert sorted(held.ran) == [1, 2, 3]
    with pytest.raises(pgqueue.JobCancelled):
        first.wait(timeout=5)


def test_a_stopping_worker_gives_its_held_jobs_back_before_its_running_ones_end(
    held: Held, conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    held.worker._loop.call_soon_threadsafe(held.worker.request_stop)
    wait_until(
        lambda: set(_rows(conn, held.ids).values()) == {("queued", 0)},
        what="held jobs given back at stop",
    )
    held.gate.set()
    assert held.blocker.wait(timeout=15) is None
    assert held.ran == []


def test_the_stray_check_leaves_held_jobs_alone(
    app: pgqueue.App,
    dsn: str,
    conn: psycopg.Connection[Any],
    start_worker: StartWorker,
    monkeypatch: pytest.MonkeyPatch,
    kept: None,
) -> None:
    monkeypatch.setattr(worker_module, "STRAY_AGE", 0.0)
    monkeypatch.setattr(worker_module, "STRAY_CHECK_INTERVAL", 0.05)
    checks: list[int] = []
    looked_up = jobs_held_by

    async def counted(*args: Any, **kwargs: Any) -> Any:
        held = await looked_up(*args, **kwargs)
        checks.append(len(held))
        return held

    monkeypatch.setattr(worker_module, "jobs_held_by", counted)
    setup = Held(app, dsn, start_worker)
    try:
        seen = len(checks)
        # Two checks that saw the blocker and the held jobs, all claimed by this worker.
        wait_until(lambda: sum(n >= 5 for n in checks[seen:]) >= 2, what="two stray checks")
        assert len(setup.worker._ahead) == 4
        assert set(_rows(conn, setup.ids).values()) == {("running", 1)}
    finally:
        setup.gate.set()
    for job in setup.quick:
        job.wait(timeout=15)
    assert sorted(setup.ran) == [0, 1, 2, 3]


def test_the_held_jobs_are_a_gauge_of_the_workers_metrics(held: Held) -> None:
    from prometheus_client import CollectorRegistry

    from pgqueue.metrics import WorkerCollector

    registry = CollectorRegistry()
    registry.register(WorkerCollector(held.worker))
    assert registry.get_sample_value("pgqueue_jobs_held") == 4
    # They are not running yet: only the blocker is.
    assert registry.get_sample_value("pgqueue_jobs_running", {"queue": "default"}) == 1


def test_jobs_of_limited_tasks_go_first_while_short_jobs_keep_every_slot_busy(
    app: pgqueue.App, conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    # No slot is ever free while a backlog of short jobs is held ahead: a limited job is then
    # claimed one at a time and put first in line, not left until the backlog is gone.
    plain_done: list[int] = []

    @app.task
    def short(n: int) -> None:
        time.sleep(0.005)  # the task's own work: 500 of them keep one slot busy 2.5 s
        plain_done.append(n)

    @app.task(concurrency_limit=5)
    def limited() -> int:
        return len(plain_done)

    start_worker(app, concurrency=1)
    short.delay_many([(n,) for n in range(500)])
    wait_until(lambda: len(plain_done) >= 20, what="the backlog under way")
    ids = limited.delay_many([()] * 3)
    app.wait_all([app.get_job(i) for i in ids], timeout=30)
    # Each ran while most of the backlog still waited.
    after = [row[0] for row in conn.execute(
        "SELECT result::int FROM pgqueue_finished_jobs WHERE id = ANY(%s)", [ids]
    ).fetchall()]  # fmt: skip
    assert len(after) == 3 and max(after) < 300, after


def test_held_jobs_start_when_a_timed_out_tasks_thread_gives_its_slot_back(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any], start_worker: StartWorker, kept: None
) -> None:
    gate = threading.Event()
    ran: list[int] = []

    @app.task
    def quick(n: int) -> None:
        ran.append(n)

    @app.task(timeout=0.2, max_attempts=1)
    def overrun() -> None:
        gate.wait(30)  # a thread Python cannot stop: it keeps its slot past the timeout

    worker: Worker = start_worker(app, concurrency=1).worker
    try:
        app.wait_all([app.get_job(i) for i in quick.delay_many([(-1,)] * 20)], timeout=15)
        with psycopg.connect(dsn) as tx:
            slow = overrun.apply_async(connection=tx)
            ids = quick.delay_many([(n,) for n in range(4)], connection=tx)
        wait_until(lambda: _rows(conn, [slow.id]) == {slow.id: ("failed", 1)}, what="timeout")
        assert worker.held_ahead == 4 and worker.free_slots() == 0
    finally:
        gate.set()
    # The thread's return frees the slot: the held jobs start then, not at a later claim.
    wait_until(lambda: set(_rows(conn, ids).values()) == {("succeeded", 1)}, what="held ran")
    assert sorted(n for n in ran if n >= 0) == [0, 1, 2, 3]


def test_held_jobs_whose_lease_was_lost_are_dropped_unrun(held: Held) -> None:
    worker = held.worker
    old_id = worker.presence.worker_id
    assert old_id is not None
    dropped = threading.Event()

    def lose_all() -> None:  # as when the worker registers again and kept none of its claims
        worker._on_new_registration(old_id, old_id + 1000, frozenset())
        dropped.set()

    worker._loop.call_soon_threadsafe(lose_all)
    assert dropped.wait(10)
    assert not worker._ahead
    assert not set(held.ids) & set(worker._claims)
    held.gate.set()
    wait_until(lambda: not worker.running and not worker._abandoned, what="blocker ended")
    assert held.ran == []


def test_claim_ahead_0_claims_for_free_slots_only(
    app: pgqueue.App, dsn: str, conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    """`--claim-ahead 0`: a worker of short jobs holds none beyond its free slots. Jobs that a
    worker of the default would hold behind a slow one (as `Held` shows) stay queued for any
    worker, and every job the database shows running is running."""
    gate, blocking = threading.Event(), threading.Event()

    @app.task
    def quick(n: int) -> int:
        return n

    @app.task
    def blocker() -> None:
        blocking.set()
        assert gate.wait(30)

    worker = start_worker(app, concurrency=1, claim_ahead=0).worker
    app.wait_all(
        [app.get_job(job_id) for job_id in quick.delay_many([(n,) for n in range(-20, 0)])],
        timeout=15,
    )
    assert worker._mean_run is not None  # its jobs are known to be short
    assert worker._ahead_wanted() == 0
    try:
        with psycopg.connect(dsn) as tx:  # in one claim's reach, as in `Held`
            blocker.apply_async(connection=tx)
            ids = quick.delay_many([(n,) for n in range(4)], connection=tx)
        assert blocking.wait(15)
        # The claim that took the blocker took nothing else, and with its one slot busy the
        # worker claims nothing more.
        assert worker._claim_room() == 0 and not worker._ahead
        assert set(_rows(conn, ids).values()) == {("queued", 0)}
    finally:
        gate.set()
    for job_id in ids:
        assert app.get_job(job_id).wait(timeout=15) in range(4)
    assert set(_rows(conn, ids).values()) == {("succeeded", 1)}
