"""`--pool process`: sync tasks in child processes, terminated at their timeout."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

import pgqueue
from tests.conftest import WorkerThread, wait_until
from tests.integration import process_app

StartWorker = Callable[..., WorkerThread]
APP_PATH = "tests.integration.process_app:app"


@pytest.fixture
def pool_app(dsn: str, conn: psycopg.Connection[Any]) -> Iterator[pgqueue.App]:
    conn.execute("CREATE TABLE pool_events (job_id bigint, attempt int, pid int, what text)")
    process_app.app.set_dsn(dsn)
    yield process_app.app
    process_app.app.close()


def _events(conn: psycopg.Connection[Any], job_id: int) -> list[tuple[int, int, str]]:
    return conn.execute(
        "SELECT attempt, pid, what FROM pool_events WHERE job_id = %s ORDER BY attempt",
        (job_id,),
    ).fetchall()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A killed child may linger as a zombie until reaped; its state says so.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


def start_pool(start_worker: StartWorker, app: pgqueue.App, **settings: Any) -> WorkerThread:
    settings.setdefault("concurrency", 2)
    return start_worker(app, pool="process", app_path=APP_PATH, **settings)


def test_sync_tasks_run_in_child_processes_side_by_side(
    pool_app: pgqueue.App, start_worker: StartWorker, conn: psycopg.Connection[Any]
) -> None:
    start_pool(start_worker, pool_app)
    jobs = [process_app.burn.delay(2_000_000) for _ in range(2)]
    for job in jobs:
        assert job.wait(timeout=60) is not None
    pids = {_events(conn, job.id)[0][1] for job in jobs}
    assert os.getpid() not in pids
    assert len(pids) == 2  # two processes, so two cores, at once


def test_a_timeout_terminates_the_process_running_the_attempt(
    pool_app: pgqueue.App, start_worker: StartWorker, conn: psycopg.Connection[Any]
) -> None:
    start_pool(start_worker, pool_app)
    job = process_app.sleepy.delay()
    with pytest.raises(pgqueue.JobFailed) as info:
        job.wait(timeout=30)
    assert info.value.exc_type == "pgqueue.execute.TaskTimeout"
    assert "its process was terminated" in info.value.exc_message
    [(_, pid, _)] = _events(conn, job.id)
    wait_until(lambda: not _alive(pid), what="the timed-out process to be gone")
    assert process_app.whoami.delay().wait(timeout=30) != pid  # a replacement took over


def test_a_job_that_kills_its_process_is_retried_then_fails_and_the_worker_goes_on(
    pool_app: pgqueue.App, start_worker: StartWorker, conn: psycopg.Connection[Any]
) -> None:
    start_pool(start_worker, pool_app)
    job = process_app.crash.delay()
    with pytest.raises(pgqueue.JobFailed) as info:
        job.wait(timeout=60)
    assert info.value.exc_type == "WorkerLost"
    assert "exited with code 3" in info.value.exc_message
    assert [attempt for attempt, _, _ in _events(conn, job.id)] == [1, 2]
    assert isinstance(process_app.whoami.delay().wait(timeout=30), int)


def test_cancelling_a_running_pool_job_terminates_its_process(
    pool_app: pgqueue.App, start_worker: StartWorker, conn: psycopg.Connection[Any]
) -> None:
    start_pool(start_worker, pool_app)
    job = process_app.wait_for_cancel.delay()
    wait_until(lambda: _events(conn, job.id), what="the job to start")
    [(_, pid, _)] = _events(conn, job.id)
    assert job.cancel() is True
    with pytest.raises(pgqueue.JobCancelled):
        job.wait(timeout=30)
    wait_until(lambda: not _alive(pid), what="the cancelled job's process to be gone")


def test_transactional_tasks_work_in_the_process_pool(
    pool_app: pgqueue.App, start_worker: StartWorker, conn: psycopg.Connection[Any]
) -> None:
    start_pool(start_worker, pool_app)
    job = process_app.charge.delay(5)
    assert job.wait(timeout=30) == 5
    assert [what for _, _, what in _events(conn, job.id)] == ["charged"]


def test_a_job_whose_task_the_pool_process_does_not_know_waits_uncounted(
    pool_app: pgqueue.App, start_worker: StartWorker, conn: psycopg.Connection[Any]
) -> None:
    # The worker's app has the task (registered here, at run time); the children import the
    # app module afresh and do not: the child's own check decides, as the worker's does.
    @pool_app.task(name="parent.only")
    def parent_only() -> None: ...

    try:
        start_pool(start_worker, pool_app)
        job = parent_only.delay()

        def given_back() -> tuple[Any, ...] | None:
            row = conn.execute(
                "SELECT status::text, attempts, error->>'type' FROM pgqueue_jobs WHERE id = %s",
                (job.id,),
            ).fetchone()
            return row if row is not None and row[2] is not None else None

        assert wait_until(given_back, timeout=60, what="the job given back") == (
            "queued",
            0,
            "UnknownTask",
        )
    finally:
        del pool_app.tasks["parent.only"]


def test_a_pool_that_cannot_import_the_app_says_so(
    pool_app: pgqueue.App, start_worker: StartWorker
) -> None:
    worker = start_worker(pool_app, pool="process", app_path="nowhere:app", concurrency=1)
    error = wait_until(lambda: worker.error, timeout=60, what="the worker to give up")
    assert isinstance(error, pgqueue.ConfigurationError)
    assert "could not load --app nowhere:app" in str(error)


def test_pgqueue_worker_pool_process_from_the_command_line(
    pool_app: pgqueue.App, dsn: str, tmp_path: Any
) -> None:
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT

    log = tmp_path / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pgqueue",
                "worker",
                "--app",
                APP_PATH,
                "--pool",
                "process",
                "--concurrency",
                "2",
                "--dsn",
                dsn,
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_until(
                lambda: "pool=process" in log.read_text(), timeout=60, what="the worker to be ready"
            )
            pid = process_app.whoami.delay().wait(timeout=30)
            assert pid not in (os.getpid(), worker.pid)
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(60) == 0
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait(30)
