"""Job progress: a task publishes it (`current_job().set_progress`), its worker writes the
latest value, coalesced and under the claim's lease, and whoever follows the job reads it
(`job.progress`, `pgqueue jobs show`) or waits for it (`wait_progress`, `aprogress`), woken by
NOTIFY."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

import pgqueue
import pgqueue.app
from pgqueue import queries
from pgqueue._names import NOTIFY_FINISHED, NOTIFY_PROGRESS
from pgqueue.cli import main as cli_main
from pgqueue.progress import MAX_PROGRESS_BYTES
from pgqueue.testing import adrain, drain, eager
from tests.conftest import WorkerThread, wait_until
from tests.integration import process_app

StartWorker = Callable[..., WorkerThread]
INTERVAL = 0.25


def _row(conn: psycopg.Connection[Any], job_id: int) -> tuple[Any, ...]:
    row = conn.execute(
        "SELECT status::text, progress, progress_at, lease FROM pgqueue_jobs WHERE id = %s "
        "UNION ALL SELECT status::text, progress, progress_at, NULL FROM pgqueue_finished_jobs "
        "WHERE id = %s",
        (job_id, job_id),
    ).fetchone()
    assert row is not None
    return tuple(row)


def test_progress_is_seen_while_the_job_runs_and_kept_when_it_ends(
    app: pgqueue.App, start_worker: StartWorker, capsys: pytest.CaptureFixture[str], dsn: str
) -> None:
    go = threading.Event()

    @app.task
    def resize(total: int) -> str:
        job = pgqueue.current_job()
        assert job is not None
        job.set_progress({"done": 1, "total": total})
        assert job.progress == {"done": 1, "total": total}
        go.wait(30)
        job.set_progress({"done": total, "total": total})
        return "resized"

    start_worker(app, progress_interval=INTERVAL)
    job = resize.delay(3)
    assert job.progress is None and job.progress_at is None
    assert job.wait_progress(timeout=15) == {"done": 1, "total": 3}
    assert job.status is pgqueue.JobStatus.RUNNING and job.progress_at is not None
    assert app.get_job(job.id).progress == {"done": 1, "total": 3}

    assert cli_main(["jobs", "show", str(job.id), "--dsn", dsn]) == 0
    shown = capsys.readouterr().out
    assert 'progress           {"done": 1, "total": 3} (' in shown
    assert cli_main(["jobs", "show", str(job.id), "--json", "--dsn", dsn]) == 0
    detail = json.loads(capsys.readouterr().out)
    assert detail["progress"] == {"done": 1, "total": 3} and detail["progress_at"]

    go.set()
    assert job.wait(timeout=15) == "resized"
    # The last value was written before the outcome, and moved with the job.
    assert job.progress == {"done": 3, "total": 3}
    assert cli_main(["jobs", "show", str(job.id), "--json", "--dsn", dsn]) == 0
    assert json.loads(capsys.readouterr().out)["progress"] == {"done": 3, "total": 3}


def test_a_job_that_publishes_nothing_shows_no_progress(
    app: pgqueue.App, start_worker: StartWorker, capsys: pytest.CaptureFixture[str], dsn: str
) -> None:
    @app.task
    def quiet() -> int:
        return 1

    worker = start_worker(app)
    job = quiet.delay()
    assert job.wait(timeout=15) == 1
    assert job.progress is None and job.progress_at is None
    assert job.wait_progress(timeout=5) is None  # finished: nothing more will come
    assert list(job.progress_updates(timeout=5)) == []
    assert cli_main(["jobs", "show", str(job.id), "--dsn", dsn]) == 0
    assert "  progress " not in capsys.readouterr().out
    assert worker.worker.progress_writer.writes == 0  # and no connection was made for it


@pytest.fixture
def notifications(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(dsn, autocommit=True) as listening:
        listening.execute(f"LISTEN {NOTIFY_PROGRESS}; LISTEN {NOTIFY_FINISHED}")
        yield listening


def _progress_notifications_until_finished(listening: psycopg.Connection[Any], job_id: int) -> int:
    """How many progress notifications named the job before the one saying it finished
    (notifications come in commit order: the last progress is written before the outcome)."""
    count = 0
    for notify in listening.notifies(timeout=30):
        ids = {int(part) for part in notify.payload.split(",")}
        if job_id in ids:
            if notify.channel == NOTIFY_FINISHED:
                return count
            count += 1
    raise AssertionError(f"job {job_id} did not finish")


def test_a_thousand_calls_in_a_tight_loop_make_a_few_writes(
    app: pgqueue.App, start_worker: StartWorker, notifications: psycopg.Connection[Any]
) -> None:
    @app.task
    def count(calls: int) -> float:
        job = pgqueue.current_job()
        assert job is not None
        started = time.perf_counter()
        for i in range(calls):
            job.set_progress({"done": i + 1, "total": calls})
        return time.perf_counter() - started

    worker = start_worker(app, progress_interval=INTERVAL)
    job = count.delay(1000)
    took = job.wait(timeout=30)
    assert job.progress == {"done": 1000, "total": 1000}
    writes = _progress_notifications_until_finished(notifications, job.id)
    # The first value at once, then at most one per interval, and the last before the outcome.
    assert 1 <= writes <= 2 + int(took / INTERVAL) + 1, (writes, took)
    assert worker.worker.progress_writer.writes <= writes + 1
    assert took < 1.0  # publishing is a few microseconds a call


def test_the_progress_of_an_attempt_that_lost_its_claim_is_refused(
    app: pgqueue.App,
    start_worker: StartWorker,
    conn: psycopg.Connection[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    started, go, published = threading.Event(), threading.Event(), threading.Event()

    @app.task(max_attempts=1)
    def slow() -> str:
        job = pgqueue.current_job()
        assert job is not None
        job.set_progress("first attempt: 10%")
        started.set()
        go.wait(30)
        job.set_progress("first attempt: 90%")
        published.set()
        return "late"

    caplog.set_level(logging.WARNING, logger="pgqueue.worker")
    start_worker(app, progress_interval=INTERVAL)
    job = slow.delay()
    assert started.wait(15)
    wait_until(lambda: _row(conn, job.id)[1] == "first attempt: 10%", what="the first progress")
    # What a rescue and a new claim do to the row: a new lease, under which the new attempt
    # publishes its own progress.
    conn.execute(
        "UPDATE pgqueue_jobs SET lease = nextval('pgqueue_job_lease_seq'), "
        "progress = '\"second attempt: 5%%\"', progress_at = now() WHERE id = %s",
        (job.id,),
    )
    go.set()
    wait_until(
        lambda: any("lost its lease" in r.getMessage() for r in caplog.records),
        what="the first attempt's outcome to be refused",
    )
    status, progress, _, _ = _row(conn, job.id)
    assert (status, progress) == ("running", "second attempt: 5%")
    # And the statement itself, with the old claim's lease: nothing written, nobody told.
    stale = queries.WRITE_PROGRESS
    document = json.dumps([{"id": job.id, "lease": 1, "value": '"stale"'}])
    assert conn.execute(stale, {"progress": document}).fetchall() == []
    conn.execute("DELETE FROM pgqueue_jobs WHERE id = %s", (job.id,))


def test_wait_progress_is_woken_by_notify(
    app: pgqueue.App,
    dsn: str,
    start_worker: StartWorker,
    conn: psycopg.Connection[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No re-read in the meantime: only a notification can wake the waiter within the test.
    monkeypatch.setattr(pgqueue.app, "WAIT_RECHECK_SECONDS", 3600.0)
    go, done = threading.Event(), threading.Event()

    @app.task
    def staged() -> None:
        job = pgqueue.current_job()
        assert job is not None
        job.set_progress("stage 1")
        go.wait(30)
        job.set_progress("stage 2")
        done.wait(30)

    start_worker(app, progress_interval=INTERVAL)
    job = staged.delay()
    assert job.wait_progress(timeout=15) == "stage 1"

    waiter_app = pgqueue.App(f"{dsn} application_name=progress-waiter")
    waiter = waiter_app.get_job(job.id)
    waiter_app.close()  # only the waiting connection stays
    seen: list[Any] = []
    thread = threading.Thread(target=lambda: seen.append(waiter.wait_progress(timeout=30)))
    thread.start()
    # The waiter has read the row (after its LISTEN) and sleeps on its connection.
    wait_until(
        lambda: conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = 'progress-waiter' "
            "AND state = 'idle' AND query LIKE '%%pgqueue_finished_jobs%%'"
        ).fetchone(),
        what="the waiter to be waiting",
    )
    go.set()
    thread.join(15)
    assert seen == ["stage 2"]
    done.set()
    job.wait(timeout=15)


def test_async_iterator_follows_each_stage_until_the_job_finishes(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    acknowledged = {stage: threading.Event() for stage in ("download", "convert")}

    @app.task
    async def pipeline() -> str:
        job = pgqueue.current_job()
        assert job is not None
        for stage in ("download", "convert"):
            job.set_progress({"stage": stage})
            await asyncio.to_thread(acknowledged[stage].wait, 30)
        job.set_progress({"stage": "upload"})
        return "done"

    start_worker(app, progress_interval=INTERVAL)
    job = pipeline.delay()

    async def follow() -> list[Any]:
        seen = []
        async for progress in job.aprogress(timeout=30):
            seen.append(progress)
            if progress["stage"] in acknowledged:
                acknowledged[progress["stage"]].set()
        return seen

    seen = asyncio.run(follow())
    assert seen == [{"stage": "download"}, {"stage": "convert"}, {"stage": "upload"}]
    assert job.status is pgqueue.JobStatus.SUCCEEDED and job.result == "done"
    assert asyncio.run(job.wait_progress_async(timeout=5)) == {"stage": "upload"}


def test_sync_iterator_starts_from_the_current_value(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    go = threading.Event()

    @app.task
    def two_steps() -> None:
        job = pgqueue.current_job()
        assert job is not None
        job.set_progress(1)
        go.wait(30)
        job.set_progress(2)

    start_worker(app, progress_interval=INTERVAL)
    job = two_steps.delay()
    assert job.wait_progress(timeout=15) == 1
    seen = []
    for progress in job.progress_updates(timeout=30):
        seen.append(progress)
        go.set()
    assert seen == [1, 2]
    assert job.status is pgqueue.JobStatus.SUCCEEDED


def test_a_bad_value_is_refused_to_the_task_and_nothing_is_published(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    @app.task
    def careless() -> list[str]:
        job = pgqueue.current_job()
        assert job is not None
        job.set_progress("good")
        refused = []
        for bad in ({"when": object()}, "x" * (MAX_PROGRESS_BYTES + 1)):
            try:
                job.set_progress(bad)
            except (TypeError, ValueError) as exc:
                refused.append(f"{type(exc).__name__}: {exc}")
        return refused

    start_worker(app, progress_interval=INTERVAL)
    job = careless.delay()
    not_json, too_large = job.wait(timeout=15)
    assert not_json.startswith("TypeError: ") and "progress['when']" in not_json
    assert too_large.startswith("ProgressTooLarge: ") and f"{MAX_PROGRESS_BYTES}" in too_large
    assert "publish a small value" in too_large
    assert job.progress == "good"


def test_an_uncaught_bad_value_fails_the_attempt_like_any_error(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    @app.task(max_attempts=1)
    def careless() -> None:
        job = pgqueue.current_job()
        assert job is not None
        job.set_progress({1, 2})

    start_worker(app)
    job = careless.delay()
    with pytest.raises(pgqueue.JobFailed) as failed:
        job.wait(timeout=15)
    assert failed.value.exc_type == "TypeError"
    assert job.progress is None


def test_transactional_task_keeps_its_last_progress(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    @app.task(transactional=True)
    def booked(calls: int) -> int:
        job = pgqueue.current_job()
        assert job is not None
        for i in range(calls):
            job.set_progress(i + 1)
        return calls

    start_worker(app, progress_interval=INTERVAL)
    job = booked.delay(500)
    assert job.wait(timeout=15) == 500
    assert job.progress == 500


def test_a_retry_clears_the_progress_and_drain_writes_it(app: pgqueue.App) -> None:
    @app.task(max_attempts=2)
    def flaky() -> str:
        job = pgqueue.current_job()
        assert job is not None
        for i in range(1000):
            job.set_progress({"attempt": job.attempt, "done": i + 1})
        if job.attempt == 1:
            raise pgqueue.Retry(countdown=3600)
        return "ok"

    job = flaky.delay()
    [ran] = drain(app, retry_now=False, max_wait=0)
    assert ran.retried
    job.refresh()
    assert job.status is pgqueue.JobStatus.QUEUED
    assert job.progress is None and job.progress_at is None  # the next attempt starts afresh

    @app.task
    def steady() -> str:
        job = pgqueue.current_job()
        assert job is not None
        for i in range(1000):
            job.set_progress(i + 1)
        return "ok"

    other = steady.delay()
    drain(app, queues=[other.queue], retry_now=True)
    assert other.refresh().progress == 1000


def test_eager_mode_keeps_the_last_progress_on_the_job(app: pgqueue.App) -> None:
    @app.task
    def counted() -> int:
        job = pgqueue.current_job()
        assert job is not None
        for i in range(10):
            job.set_progress(i + 1)
        return 10

    with eager(app):
        job = counted.delay()
    assert job.progress == 10 and job.wait_progress() == 10
    assert list(job.progress_updates()) == [10]


@pytest.fixture
def pool_app(dsn: str, conn: psycopg.Connection[Any]) -> Iterator[pgqueue.App]:
    conn.execute("CREATE TABLE pool_events (job_id bigint, attempt int, pid int, what text)")
    process_app.app.set_dsn(dsn)
    yield process_app.app
    process_app.app.close()


def test_process_pool_children_publish_through_their_worker(
    pool_app: pgqueue.App,
    start_worker: StartWorker,
    conn: psycopg.Connection[Any],
    notifications: psycopg.Connection[Any],
) -> None:
    start_worker(
        pool_app,
        pool="process",
        app_path="tests.integration.process_app:app",
        concurrency=1,
        progress_interval=INTERVAL,
    )
    job = process_app.publish_progress.delay(1000)
    assert job.wait_progress(timeout=60) == {"stage": "waiting"}
    conn.execute("INSERT INTO pool_events (job_id, what) VALUES (%s, 'go')", (job.id,))
    child_pid = job.wait(timeout=60)
    assert child_pid != os.getpid()
    assert job.progress == {"stage": "counting", "done": 1000}
    writes = _progress_notifications_until_finished(notifications, job.id)
    assert 2 <= writes <= 6, writes


def _declare_lost(conn: psycopg.Connection[Any], worker_id: int) -> bool:
    """What the fleet's rescuer does to a worker whose heartbeat stopped; True once it is gone."""
    conn.execute(
        "UPDATE pgqueue_workers SET heartbeat_at = now() - interval '1 hour' WHERE id = %s",
        (worker_id,),
    )
    conn.execute(queries.RESCUE_LOST_JOBS, {"lock_grace": 60.0, "heartbeat_timeout": 60.0})
    gone = conn.execute("SELECT 1 FROM pgqueue_workers WHERE id = %s", (worker_id,)).fetchone()
    return gone is None


def test_a_rescued_job_starts_its_next_attempt_without_the_lost_ones_progress(
    app: pgqueue.App, start_worker: StartWorker, conn: psycopg.Connection[Any]
) -> None:
    first, second = threading.Event(), threading.Event()
    release_first, release_second = threading.Event(), threading.Event()

    @app.task(max_attempts=2)
    def long() -> int:
        job = pgqueue.current_job()
        assert job is not None
        if job.attempt == 1:
            job.set_progress("attempt 1 got far")
            first.set()
            release_first.wait(30)
            job.set_progress("attempt 1, too late")  # its claim is gone
        else:
            second.set()
            release_second.wait(30)
        return job.attempt

    worker = start_worker(app, progress_interval=INTERVAL, heartbeat_interval=0.2)
    job = long.delay()
    assert job.wait_progress(timeout=15) == "attempt 1 got far" and first.is_set()
    old_id = worker.worker.presence.worker_id
    wait_until(lambda: _declare_lost(conn, old_id), what="the worker to be declared lost")
    assert second.wait(15)  # the worker registered again and claimed the job once more
    assert _row(conn, job.id)[:3] == ("running", None, None)

    writes = worker.worker.progress_writer.writes
    release_first.set()
    wait_until(lambda: worker.worker.progress_writer.writes > writes, what="the late write")
    assert _row(conn, job.id)[:3] == ("running", None, None)  # refused: not its claim
    release_second.set()
    assert job.wait(timeout=15) == 2
    assert job.progress is None


def test_adrain_writes_the_progress_of_async_tasks(app: pgqueue.App) -> None:
    @app.task
    async def counted() -> int:
        job = pgqueue.current_job()
        assert job is not None
        for i in range(1000):
            job.set_progress(i + 1)
            if i % 100 == 0:
                await asyncio.sleep(0)
        return 1000

    job = counted.delay()
    [ran] = asyncio.run(adrain(app))
    assert ran.status == "succeeded"
    assert job.refresh().progress == 1000


def test_progress_lost_with_the_connection_is_written_again(
    app: pgqueue.App,
    start_worker: StartWorker,
    conn: psycopg.Connection[Any],
) -> None:
    next_step, finish = threading.Event(), threading.Event()

    @app.task
    def two_steps() -> None:
        job = pgqueue.current_job()
        assert job is not None
        job.set_progress("one")
        next_step.wait(30)
        job.set_progress("two")
        finish.wait(30)

    worker = start_worker(app, progress_interval=INTERVAL)
    job = two_steps.delay()
    assert job.wait_progress(timeout=15) == "one"
    # The writer shares the worker's second connection with the claimer and the maintenance
    # loop: whichever uses it first after the loss makes it again, and a write that met the
    # loss is made again on the new one.
    shared = worker.worker._connection._conn
    assert shared is not None
    conn.execute("SELECT pg_terminate_backend(%s)", (shared.pgconn.backend_pid,))
    next_step.set()
    assert job.wait_progress(timeout=15) == "two"
    finish.set()
    job.wait(timeout=15)


def test_a_waiting_workflow_step_is_not_taken_for_finished(app: pgqueue.App) -> None:
    @app.task
    def step() -> None: ...

    flow = pgqueue.chain(step.si(), step.si()).apply_async()
    waiting = flow.jobs[1]
    assert waiting.status.value == "waiting"
    # No worker runs: nothing is published and the step has not ended, so the wait times out
    # (it must not return at once as it does for a finished job).
    with pytest.raises(TimeoutError):
        waiting.wait_progress(timeout=0.5)
    with pytest.raises(TimeoutError):
        list(waiting.progress_updates(timeout=0.5))
