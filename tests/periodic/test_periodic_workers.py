"""Real worker processes, each running the scheduler: one job per tick, never two."""

from __future__ import annotations

import signal
from datetime import timedelta
from pathlib import Path

import psycopg

from tests.acceptance.helpers import WorkerProcess
from tests.conftest import wait_until

APP = "tests.periodic.periodic_app:app"
OBSERVE = timedelta(seconds=20)


def _fire_times(dsn: str) -> list[object]:
    with psycopg.connect(dsn) as conn:
        return [
            row[0]
            for row in conn.execute(
                "SELECT periodic_fire_at FROM pgqueue_all_jobs"
                " WHERE periodic_name = 'every-second' ORDER BY periodic_fire_at"
            )
        ]


def test_three_workers_make_exactly_one_job_per_one_second_tick(dsn: str, tmp_path: Path) -> None:
    workers = [
        WorkerProcess(dsn, tmp_path / f"worker{i}.log", ["--app", APP, "--concurrency", "2"])
        for i in range(3)
    ]
    try:
        for worker in workers:
            worker.launch()
        for worker in workers:
            worker.wait_ready()

        def observed_long_enough() -> bool:
            times = _fire_times(dsn)
            return len(times) > 1 and times[-1] - times[0] >= OBSERVE  # type: ignore[operator]

        def caught_up() -> bool:
            """At most the latest tick's job unfinished: a slow machine may lag behind the
            schedule for a while, and the check after the stop must not count that lag."""
            unfinished = _count(
                dsn, "SELECT count(*) FROM pgqueue_all_jobs WHERE status IN ('queued', 'running')"
            )
            return unfinished <= 1

        wait_until(
            lambda: observed_long_enough() and caught_up(),
            timeout=90,
            interval=0.5,
            what="20 s of ticks, every job but the latest finished",
        )
        for worker in workers:
            worker.send(signal.SIGTERM)
        for worker in workers:
            assert worker.wait(60) == 0
    finally:
        for worker in workers:
            worker.cleanup()

    times = _fire_times(dsn)
    span = times[-1] - times[0]  # type: ignore[operator]
    expected_ticks = int(span.total_seconds()) + 1
    assert len(times) == len(set(times)) == expected_ticks, (
        f"{len(times)} jobs for {expected_ticks} ticks"
    )
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FILTER (WHERE status = 'succeeded'), count(*) FROM pgqueue_all_jobs"
        ).fetchone()
    assert row is not None
    # Every job ran; the last tick's job may still have been queued when the workers stopped.
    assert row[0] >= row[1] - 2


def _count(dsn: str, sql: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def test_a_worker_without_scheduler_runs_jobs_that_a_lone_scheduler_makes(
    dsn: str, tmp_path: Path
) -> None:
    import subprocess
    import sys

    from tests.acceptance.helpers import subprocess_env
    from tests.conftest import ROOT
    from tests.periodic import periodic_app

    worker = WorkerProcess(dsn, tmp_path / "worker.log", ["--app", APP, "--no-scheduler"])
    scheduler: subprocess.Popen[bytes] | None = None
    try:
        worker.launch().wait_ready()
        # The worker is fully running: it runs a job, yet never synced the schedule.
        with psycopg.connect(dsn, autocommit=True) as conn:
            job = periodic_app.every_second.apply_async(connection=conn)
        wait_until(
            lambda: _count(
                dsn,
                f"SELECT count(*) FROM pgqueue_all_jobs WHERE id = {job.id}"
                " AND status = 'succeeded'",
            ),
            what="the worker to run a job",
        )
        assert _count(dsn, "SELECT count(*) FROM pgqueue_periodic") == 0

        log = (tmp_path / "scheduler.log").open("wb")
        scheduler = subprocess.Popen(
            [sys.executable, "-m", "pgqueue", "scheduler", "--app", APP],
            cwd=ROOT,
            env=subprocess_env(dsn),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_until(
            lambda: (
                _count(
                    dsn,
                    "SELECT count(*) FROM pgqueue_all_jobs WHERE periodic_name = 'every-second'"
                    " AND status = 'succeeded'",
                )
                >= 3
            ),
            timeout=30,
            what="three scheduled jobs run",
        )
        scheduler.send_signal(signal.SIGTERM)
        assert scheduler.wait(30) == 0
        worker.send(signal.SIGTERM)
        assert worker.wait(60) == 0
    finally:
        if scheduler is not None and scheduler.poll() is None:
            scheduler.kill()
            scheduler.wait(30)
        worker.cleanup()
