"""Schedules in the database, driven by a controllable clock: no test waits for real time."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue import periodic

T0 = datetime(2026, 6, 1, 12, 0, 0, tzinfo=timezone.utc)


def _jobs(dsn: str) -> list[tuple[str, datetime | None]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT periodic_name, periodic_fire_at FROM pgqueue_all_jobs ORDER BY id"
        ).fetchall()


def _row(dsn: str, name: str) -> dict[str, Any]:
    with psycopg.connect(dsn, row_factory=psycopg.rows.dict_row) as conn:
        row = conn.execute("SELECT * FROM pgqueue_periodic WHERE name = %s", (name,)).fetchone()
    assert row is not None
    return row


def _app(dsn: str, **options: Any) -> pgqueue.App:
    app = pgqueue.App(dsn)

    @app.periodic(name="tick", **options)
    @app.task
    def tick() -> None: ...

    return app


def _sync(app: pgqueue.App, now: datetime) -> periodic.SyncReport:
    with app.connect() as conn:
        return periodic.sync_schedules(conn, app.schedules.values(), now, app.tasks)


def _fire(app: pgqueue.App, now: datetime, lock: bool = True) -> list[periodic.FiredTick]:
    with app.connect() as conn:
        return periodic.fire_due(conn, app, now, lock=lock)


def test_every_tick_fires_exactly_once(dsn: str) -> None:
    app = _app(dsn, every=60)
    _sync(app, T0)
    for minute in range(1, 11):
        now = T0 + timedelta(minutes=minute, seconds=1)
        assert len(_fire(app, now)) == 1
        assert _fire(app, now) == []  # the same instant again: nothing new
    fire_times = [fire_at for _, fire_at in _jobs(dsn)]
    assert fire_times == [T0 + timedelta(minutes=m) for m in range(1, 11)]


@pytest.mark.parametrize("lock", [True, False], ids=["row-locks", "no-locks"])
def test_three_concurrent_schedulers_make_one_job_per_tick(dsn: str, lock: bool) -> None:
    app = _app(dsn, every=10)
    _sync(app, T0)
    ticks = 30
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []

    def scheduler() -> None:
        try:
            with app.connect() as conn:
                for i in range(1, ticks + 1):
                    barrier.wait(timeout=30)  # all three race for the same instant
                    periodic.fire_due(conn, app, T0 + timedelta(seconds=10 * i), lock=lock)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=scheduler) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    fire_times = [fire_at for _, fire_at in _jobs(dsn)]
    assert sorted(fire_times) == [T0 + timedelta(seconds=10 * i) for i in range(1, ticks + 1)]


def test_the_database_refuses_a_second_job_for_the_same_tick(dsn: str) -> None:
    app = _app(dsn, every=60)
    _sync(app, T0)
    params = periodic._job_params(app, app.schedules["tick"], T0 + timedelta(minutes=1))
    with psycopg.connect(dsn) as conn:
        first = conn.execute(pgqueue.queries.INSERT_PERIODIC_JOB, params).fetchall()
        second = conn.execute(pgqueue.queries.INSERT_PERIODIC_JOB, params).fetchall()
    assert len(first) == 1 and second == []


@pytest.mark.parametrize(
    ("catch_up", "expected_hours"),
    [("latest", [5]), ("skip", []), ("all", [1, 2, 3, 4, 5])],
)
def test_catch_up_after_the_whole_fleet_was_down(
    dsn: str, catch_up: str, expected_hours: list[int]
) -> None:
    app = _app(dsn, cron="0 * * * *", catch_up=catch_up)
    _sync(app, T0 - timedelta(minutes=1))
    assert len(_fire(app, T0 + timedelta(seconds=1))) == 1  # the 12:00 tick, on time
    # Down from 12:00:01 until 17:20: the 13:00..17:00 ticks were all missed.
    fired = _fire(app, T0 + timedelta(hours=5, minutes=20))
    assert [f.fire_at for f in fired] == [T0 + timedelta(hours=h) for h in expected_hours]
    row = _row(dsn, "tick")
    assert row["last_fire_at"] == T0 + timedelta(hours=5)
    assert row["next_fire_at"] == T0 + timedelta(hours=6)


def test_catch_up_all_is_bounded(dsn: str) -> None:
    app = _app(dsn, every=60, catch_up="all", max_catch_up=7)
    _sync(app, T0)
    fired = _fire(app, T0 + timedelta(hours=3))
    assert len(fired) == 7
    assert fired[-1].fire_at == T0 + timedelta(hours=3)


def test_skip_still_runs_a_tick_that_is_only_slightly_late(dsn: str) -> None:
    app = _app(dsn, every=60, catch_up="skip")
    _sync(app, T0)
    assert len(_fire(app, T0 + timedelta(minutes=1, seconds=5))) == 1


def test_sync_adds_updates_and_retires_schedules(dsn: str) -> None:
    app = _app(dsn, every=60)
    assert _sync(app, T0).added == ["tick"]
    assert _sync(app, T0) == periodic.SyncReport([], [], [])  # unchanged: no write

    changed = _app(dsn, cron="*/5 * * * *")
    assert _sync(changed, T0).updated == ["tick"]
    row = _row(dsn, "tick")
    assert row["cron"] == "*/5 * * * *" and row["every_seconds"] is None
    assert row["next_fire_at"] == T0 + timedelta(minutes=5)

    other_service = pgqueue.App(dsn)  # knows nothing of the task: leaves it alone
    assert _sync(other_service, T0).undeclared == []

    without_schedule = pgqueue.App(dsn)  # still has the task, no longer its schedule
    without_schedule.task(name=row["task_name"])(lambda: None)
    assert _sync(without_schedule, T0).undeclared == ["tick"]
    assert _row(dsn, "tick")["declared"] is False
    assert _fire(without_schedule, T0 + timedelta(hours=1)) == []  # removed: stops firing


def test_sync_leaves_the_operators_switch_alone(dsn: str) -> None:
    app = _app(dsn, every=60)
    _sync(app, T0)
    with app.connect() as conn:
        periodic.set_enabled(conn, "tick", False)
    _sync(app, T0)
    assert _row(dsn, "tick")["enabled"] is False
    assert _fire(app, T0 + timedelta(minutes=5)) == []


def _cli(dsn: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pgqueue", *args, "--dsn", dsn],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_run_time_management_through_the_cli(dsn: str) -> None:
    added = _cli(
        dsn,
        "periodic",
        "add",
        "cleanup",
        "--task",
        "ops.cleanup",
        "--every",
        "3600",
        "--kwargs",
        '{"days": 30}',
    )
    assert added.returncode == 0, added.stderr
    listed = _cli(dsn, "periodic", "list")
    assert listed.returncode == 0
    assert "cleanup" in listed.stdout and "every 3600s" in listed.stdout

    ran = _cli(dsn, "periodic", "run-now", "cleanup")
    assert ran.returncode == 0, ran.stderr
    job_id = int(ran.stdout.split()[2])
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT task_name, kwargs, periodic_name FROM pgqueue_all_jobs WHERE id = %s", (job_id,)
        ).fetchone()
    assert row == ("ops.cleanup", {"days": 30}, "cleanup")
    assert f"{job_id} queued" in _cli(dsn, "periodic", "list").stdout

    assert _cli(dsn, "periodic", "disable", "cleanup").returncode == 0
    assert "disabled" in _cli(dsn, "periodic", "list").stdout
    assert _cli(dsn, "periodic", "enable", "cleanup").returncode == 0
    assert _cli(dsn, "periodic", "remove", "cleanup").returncode == 0
    assert "(no periodic schedules)" in _cli(dsn, "periodic", "list").stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("periodic", "add", "x", "--task", "t", "--cron", "99 * * * *"), "invalid cron"),
        (
            ("periodic", "add", "x", "--task", "t", "--cron", "* * * * *", "--tz", "Nowhere/X"),
            "unknown time zone",
        ),
        (("periodic", "add", "x", "--task", "t", "--every", "0"), "positive interval"),
        (("periodic", "add", "x", "--task", "t", "--every", "5", "--args", "{bad"), "JSON"),
        (("periodic", "enable", "missing"), "no periodic schedule named 'missing'"),
        (("periodic", "run-now", "missing"), "no periodic schedule named 'missing'"),
    ],
)
def test_cli_refuses_bad_input_with_one_line(dsn: str, args: tuple[str, ...], message: str) -> None:
    result = _cli(dsn, *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
