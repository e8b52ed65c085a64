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
from tests.conftest import wait_until

T0 = datetime(2026, 6, 1, 12, 0, 0, tzinfo=timezone.utc)
APP = "tests.periodic.periodic_app:app"


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


def _store(dsn: str, name: str, task_name: str, **columns: Any) -> None:
    """Write a run-time schedule's row as it is, unchecked (as an older pgqueue or a hand edit
    may have written it)."""
    row = {"cron": None, "every_seconds": 60.0, "next_fire_at": T0, **columns}
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "INSERT INTO pgqueue_periodic (name, task_name, cron, every_seconds, next_fire_at,"
            " kwargs, source) VALUES (%s, %s, %s, %s, %s, COALESCE(%s::jsonb, '{}'), 'cli')",
            (
                name,
                task_name,
                row["cron"],
                row["every_seconds"],
                row["next_fire_at"],
                row.get("kwargs"),
            ),
        )


def _refuse_jobs_of(dsn: str, schedule: str) -> None:
    """Make the database refuse every job of one schedule (a trigger raising an error)."""
    with psycopg.connect(dsn) as conn:
        conn.execute(
            "CREATE FUNCTION refuse_job() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'job refused by a trigger'; END $$"
        )
        conn.execute(
            "CREATE TRIGGER refuse_job BEFORE INSERT ON pgqueue_jobs FOR EACH ROW"
            f" WHEN (NEW.periodic_name = '{schedule}') EXECUTE FUNCTION refuse_job()"
        )


def test_one_broken_schedule_never_stops_the_others(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = _app(dsn, every=60)
    _sync(app, T0)
    task_name = app.schedules["tick"].task_name
    _store(dsn, "feb-31", task_name, cron="0 0 31 2 *", every_seconds=None)  # no next time
    _store(dsn, "kwargs-not-an-object", task_name, kwargs="[1, 2]")  # a TypeError
    _store(dsn, "refused", task_name)  # the database refuses its job
    _refuse_jobs_of(dsn, "refused")
    now = T0 + timedelta(minutes=1, seconds=1)

    with caplog.at_level("ERROR", logger="pgqueue.scheduler"):
        fired = _fire(app, now)

    assert [f.schedule for f in fired] == ["tick"]
    assert [name for name, _ in _jobs(dsn)] == ["tick"]
    broken = ("feb-31", "kwargs-not-an-object", "refused")
    for name in broken:
        row = _row(dsn, name)
        # Looked at again later, not at every pass: the scheduler does not spin on it.
        assert row["next_fire_at"] == now + periodic.BROKEN_SCHEDULE_RETRY, name
        assert row["last_fire_at"] is None, name
        assert any(name in message for message in caplog.messages), name
    assert _fire(app, now) == []


def test_a_broken_schedule_is_retried_later_and_fires_once_repaired(dsn: str) -> None:
    app = _app(dsn, every=60)
    _sync(app, T0)
    _store(dsn, "refused", app.schedules["tick"].task_name)
    _refuse_jobs_of(dsn, "refused")
    now = T0 + timedelta(minutes=1, seconds=1)
    assert [f.schedule for f in _fire(app, now)] == ["tick"]
    with psycopg.connect(dsn) as conn:
        conn.execute("DROP TRIGGER refuse_job ON pgqueue_jobs")
    retried = now + periodic.BROKEN_SCHEDULE_RETRY
    fired = _fire(app, retried) + _fire(app, retried + timedelta(minutes=1))
    assert "refused" in {f.schedule for f in fired}


def test_the_scheduler_thread_keeps_firing_beside_a_broken_schedule(dsn: str) -> None:
    app = _app(dsn, every=1)
    _store(dsn, "feb-31", app.schedules["tick"].task_name, cron="0 0 31 2 *", every_seconds=None)
    scheduler = periodic.Scheduler(app, max_sleep=0.2)
    scheduler.start()
    try:
        wait_until(lambda: "tick" in {name for name, _ in _jobs(dsn)}, what="a tick's job")
    finally:
        scheduler.stop()
        scheduler.join(10)
    assert _row(dsn, "feb-31")["next_fire_at"] > datetime.now(timezone.utc)


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
        "ops.clean_up",
        "--every",
        "3600",
        "--kwargs",
        '{"days": 30}',
    )
    assert added.returncode == 0, added.stderr
    listed = _cli(dsn, "periodic", "list")
    assert listed.returncode == 0
    assert "cleanup" in listed.stdout and "every 3600s" in listed.stdout

    ran = _cli(dsn, "periodic", "run-now", "cleanup", "--app", APP)
    assert ran.returncode == 0, ran.stderr
    job_id = int(ran.stdout.split()[2])
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT task_name, kwargs, periodic_name, queue, priority, max_attempts"
            " FROM pgqueue_all_jobs WHERE id = %s",
            (job_id,),
        ).fetchone()
    # The task's own options, from the app that registers it.
    assert row == ("ops.clean_up", {"days": 30}, "cleanup", "maintenance", 3, 7)
    assert f"{job_id} queued" in _cli(dsn, "periodic", "list").stdout

    assert _cli(dsn, "periodic", "disable", "cleanup").returncode == 0
    assert "disabled" in _cli(dsn, "periodic", "list").stdout
    assert _cli(dsn, "periodic", "enable", "cleanup").returncode == 0
    assert _cli(dsn, "periodic", "remove", "cleanup").returncode == 0
    assert "(no periodic schedules)" in _cli(dsn, "periodic", "list").stdout


def test_periodic_list_shows_broken_and_overdue_schedules_beside_the_others(dsn: str) -> None:
    _store(dsn, "feb-31", "ops.report", cron="0 0 31 2 *", every_seconds=None)
    in_an_hour = datetime.now(timezone.utc) + timedelta(hours=1)
    _store(dsn, "hourly", "ops.report", every_seconds=3600, next_fire_at=in_an_hour)
    _store(dsn, "stalled", "ops.report", every_seconds=3600, next_fire_at=T0)
    listed = _cli(dsn, "periodic", "list")
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert "invalid" in lines["feb-31"] and "0 0 31 2 *" in lines["feb-31"]
    assert "enabled" in lines["hourly"]
    # Due long ago and never fired: no running scheduler knows its task.
    assert "overdue" in lines["stalled"]


def test_a_scheduler_fires_only_schedules_of_tasks_its_app_registers(dsn: str) -> None:
    reports = pgqueue.App(dsn)

    @reports.periodic(every=60, name="build-report")
    @reports.task(name="reports.build", queue="reports", priority=5, max_attempts=9)
    def build() -> None: ...

    _sync(reports, T0)
    other_service = _app(dsn, every=60)  # shares the database, knows nothing of reports
    _sync(other_service, T0)
    now = T0 + timedelta(minutes=1, seconds=1)

    assert [f.schedule for f in _fire(other_service, now)] == ["tick"]
    assert _row(dsn, "build-report")["next_fire_at"] == T0 + timedelta(minutes=1)  # untouched
    assert [f.schedule for f in _fire(reports, now)] == ["build-report"]
    with psycopg.connect(dsn) as conn:
        made = conn.execute(
            "SELECT queue, priority, max_attempts FROM pgqueue_all_jobs"
            " WHERE periodic_name = 'build-report'"
        ).fetchall()
    assert made == [("reports", 5, 9)]


def test_a_schedule_no_scheduler_knows_is_reported_once_and_never_spins_it(
    dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = _app(dsn, every=3600)
    _sync(app, datetime.now(timezone.utc))  # its own schedule: due within the hour
    _store(dsn, "orphan", "gone.from.every.app", next_fire_at=T0)  # overdue since T0
    scheduler = periodic.Scheduler(app, max_sleep=1.0)
    reported: set[str] = set()
    with app.connect() as conn, caplog.at_level("WARNING", logger="pgqueue.scheduler"):
        assert periodic.report_unfired_schedules(conn, app, reported) == ["orphan"]
        assert periodic.report_unfired_schedules(conn, app, reported) == []
        # Its overdue fire time is not this scheduler's business: no busy loop on it.
        assert scheduler.passes._sleep_for(conn) == 1.0
    warnings = [m for m in caplog.messages if "orphan" in m]
    assert len(warnings) == 1 and "gone.from.every.app" in warnings[0]


def test_run_now_of_an_invalid_stored_schedule_is_a_one_line_error(dsn: str) -> None:
    _store(dsn, "bad-kwargs", "ops.clean_up", kwargs="[1, 2]")
    result = _cli(dsn, "periodic", "run-now", "bad-kwargs", "--app", APP)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "periodic schedule 'bad-kwargs' is invalid" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_run_now_refuses_a_task_the_app_does_not_register(dsn: str) -> None:
    _store(dsn, "orphan", "gone.from.every.app")
    line = _cli(dsn, "periodic", "run-now", "orphan", "--app", APP).stderr.strip()
    assert "'gone.from.every.app'" in line and "--app" in line
    assert _jobs(dsn) == []


def test_periodic_add_warns_when_the_app_does_not_register_the_task(dsn: str) -> None:
    added = _cli(dsn, "periodic", "add", "x", "--task", "typo.task", "--every", "60", "--app", APP)
    assert added.returncode == 0
    assert "'typo.task'" in added.stderr and "does not register" in added.stderr
    known = _cli(
        dsn, "periodic", "add", "y", "--task", "ops.clean_up", "--every", "60", "--app", APP
    )
    assert known.returncode == 0 and known.stderr == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("periodic", "add", "x", "--task", "t", "--cron", "99 * * * *"), "invalid cron"),
        (
            ("periodic", "add", "x", "--task", "t", "--cron", "* * * * *", "--tz", "Nowhere/X"),
            "unknown time zone",
        ),
        (("periodic", "add", "x", "--task", "t", "--every", "0"), "positive interval"),
        (("periodic", "add", "x", "--task", "t", "--cron", "0 0 31 2 *"), "never fires"),
        (("periodic", "add", "x", "--task", "t", "--every", "5", "--args", "{bad"), "JSON"),
        (("periodic", "enable", "missing"), "no periodic schedule named 'missing'"),
        (("periodic", "run-now", "missing"), "no periodic schedule named 'missing'"),
        (("periodic", "run-now", "missing", "--app", APP), "no periodic schedule named 'missing'"),
    ],
)
def test_cli_refuses_bad_input_with_one_line(dsn: str, args: tuple[str, ...], message: str) -> None:
    result = _cli(dsn, *args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_code_schedule_whose_task_is_gone_is_removed_only_with_force(dsn: str) -> None:
    """A task removed from the code together with its schedule: no app registers the task, so
    none marks the schedule removed, and it stays overdue until the operator deletes it."""
    _store(dsn, "gone [every 60s]", "retired.task")
    with psycopg.connect(dsn) as conn:
        conn.execute("UPDATE pgqueue_periodic SET source = 'code' WHERE name = 'gone [every 60s]'")
    refused = _cli(dsn, "periodic", "remove", "gone [every 60s]")
    assert refused.returncode != 0
    assert "--force" in refused.stderr and "Traceback" not in refused.stderr
    removed = _cli(dsn, "periodic", "remove", "--force", "gone [every 60s]")
    assert removed.returncode == 0, removed.stderr
    assert "(no periodic schedules)" in _cli(dsn, "periodic", "list").stdout
