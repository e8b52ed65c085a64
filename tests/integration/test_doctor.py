"""`pgqueue doctor`'s checks, each facing its condition provoked for real on the test's own
database: a REPEATABLE READ transaction held open in another session, dead rows left by a
delete while autovacuum is off for the table, a worker whose heartbeat is old, a schedule no
scheduler fired, a running job past its task's timeout, a schema at an older revision."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
from psycopg import IsolationLevel

import pgqueue
from pgqueue import doctor, migrate, periodic
from pgqueue.doctor import Level, Thresholds
from pgqueue.inspect import server, stuck
from tests.conftest import wait_until

Conn = psycopg.Connection[Any]


def _connect(dsn: str) -> Any:
    return lambda: psycopg.connect(dsn, autocommit=True)


# -- the xmin horizon ---------------------------------------------------------------------


def test_a_repeatable_read_transaction_held_open_is_named_by_its_pid(dsn: str, conn: Conn) -> None:
    with psycopg.connect(dsn, application_name="report-builder") as holder:
        holder.isolation_level = IsolationLevel.REPEATABLE_READ
        holder.execute("SELECT count(*) FROM pgqueue_jobs")  # takes the snapshot
        pid = holder.info.backend_pid

        held = doctor.check_xmin_horizon(conn, Thresholds())  # just opened: under 5 min
        assert held.level is Level.PASS
        assert f"pid {pid}" in held.found

        warned = doctor.check_xmin_horizon(conn, Thresholds(xmin_warn=0))
        assert warned.level is Level.WARN
        assert f"pid {pid} (application 'report-builder'" in warned.found
        assert "idle in transaction" in warned.found
        assert "SELECT count(*) FROM pgqueue_jobs" in warned.found
        assert f"pg_terminate_backend({pid})" in warned.advice

        failed = doctor.check_xmin_horizon(conn, Thresholds(xmin_warn=0, xmin_fail=0))
        assert failed.level is Level.FAIL
        assert failed.data["holders"][0]["pid"] == pid

        age = server.horizon_age_seconds(conn)
        assert 0 < age < 600
    # Once it ends, nothing holds the horizon back but this test's own connection, which
    # doctor leaves out.
    assert doctor.check_xmin_horizon(conn, Thresholds(xmin_warn=0)).level is Level.PASS
    assert server.horizon_age_seconds(conn) == 0.0


def test_a_transaction_in_another_database_does_not_hold_this_ones_horizon(
    dsn: str, empty_dsn: str, conn: Conn
) -> None:
    with psycopg.connect(empty_dsn) as elsewhere:
        elsewhere.isolation_level = IsolationLevel.REPEATABLE_READ
        elsewhere.execute("SELECT 1")
        pid = elsewhere.info.backend_pid
        assert all(h.pid != pid for h in server.xmin_holders(conn, limit=50))
        with psycopg.connect(empty_dsn, autocommit=True) as there:
            assert any(h.pid == pid for h in server.xmin_holders(there, limit=50))


# -- the hot table ------------------------------------------------------------------------


def _hot_table(conn: Conn) -> server.HotTable:
    table = server.hot_table(conn)
    assert table is not None
    return table


def test_dead_rows_left_while_autovacuum_is_off_for_the_table(conn: Conn) -> None:
    conn.execute("ALTER TABLE pgqueue_jobs SET (autovacuum_enabled = false)")
    # 5,000 jobs with about 1.3 kB of arguments each, then gone: 5,000 dead row versions.
    conn.execute(
        "INSERT INTO pgqueue_jobs (task_name, args)"
        " SELECT 'doctor.bloat', jsonb_build_array("
        "   (SELECT string_agg(md5(random()::text || g::text || i::text), '')"
        "    FROM generate_series(1, 40) AS i))"
        " FROM generate_series(1, 5000) AS g"
    )
    conn.execute("DELETE FROM pgqueue_jobs")
    th = Thresholds(
        dead_tuples_warn=1000,
        dead_tuples_fail=4000,
        hot_table_bytes_warn=1024 * 1024,
        bytes_per_row_warn=1024,
    )
    wait_until(lambda: _hot_table(conn).dead >= 5000, what="the delete to reach the statistics")
    table = _hot_table(conn)

    dead = doctor.check_dead_tuples(table, th)
    assert dead.level is Level.FAIL
    assert "5,000 dead and 0 live" in dead.found
    assert doctor.check_dead_tuples(table, Thresholds(dead_tuples_warn=1000)).level is Level.WARN
    assert doctor.check_dead_tuples(table, Thresholds()).level is Level.PASS

    size = doctor.check_hot_table_size(table, th)
    assert size.level is Level.WARN, size
    assert "for 0 live rows" in size.found
    assert doctor.check_hot_table_size(table, Thresholds()).level is Level.PASS

    autovacuum = doctor.check_autovacuum(table, th)
    assert autovacuum.level is Level.FAIL
    assert "autovacuum_enabled = false" in autovacuum.found
    assert "ALTER TABLE pgqueue_jobs RESET (autovacuum_enabled)" in autovacuum.advice

    conn.execute("VACUUM pgqueue_jobs")
    wait_until(
        lambda: _hot_table(conn).last_vacuum is not None and _hot_table(conn).dead == 0,
        what="the vacuum to reach the statistics",
    )
    table = _hot_table(conn)
    assert doctor.check_dead_tuples(table, th).level is Level.PASS
    # Still off for the table, but vacuumed by hand and clean: a warning, not a failure.
    after = doctor.check_autovacuum(table, th)
    assert after.level is Level.WARN
    assert "last vacuum by hand" in after.found and "never" not in after.found.split(",")[1]


def test_an_autovacuumed_hot_table_passes(conn: Conn) -> None:
    table = _hot_table(conn)
    finding = doctor.check_autovacuum(table, Thresholds())
    if table.autovacuum_enabled:
        assert finding.level is Level.PASS
    else:  # a server run with autovacuum = off (the CI server is): said so, not failed
        assert finding.level is Level.WARN
        assert "autovacuum = off" in finding.found


# -- pgqueue's own rows -------------------------------------------------------------------


def _register_worker(conn: Conn, name: str, silent_for: str) -> int:
    row = conn.execute(
        "INSERT INTO pgqueue_workers (name, hostname, pid, queues, concurrency, heartbeat_at)"
        " VALUES (%s, 'host-a', 4242, '{default}', 4, now() - %s::interval) RETURNING id",
        (name, silent_for),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _run_job(conn: Conn, job_id: int, worker_id: int, started: str) -> None:
    """Put the job in the state a claim leaves it in, started `started` ago."""
    conn.execute(
        "UPDATE pgqueue_jobs SET status = 'running', worker_id = %s, attempts = 1,"
        " started_at = now() - %s::interval, lease = nextval('pgqueue_job_lease_seq')"
        " WHERE id = %s",
        (worker_id, started, job_id),
    )


def test_a_worker_whose_heartbeat_stopped_is_named(app: pgqueue.App, conn: Conn) -> None:
    @app.task
    def work() -> None: ...

    assert doctor.check_silent_workers(conn, Thresholds()).level is Level.PASS
    idle = _register_worker(conn, "idle-worker", "10 minutes")
    finding = doctor.check_silent_workers(conn, Thresholds())
    assert finding.level is Level.WARN  # nothing of it is stuck
    assert "worker idle-worker (host host-a, pid 4242)" in finding.found
    assert "0 running job(s)" in finding.found
    assert "No live worker is left" in finding.advice

    busy = _register_worker(conn, "busy-worker", "20 minutes")
    _run_job(conn, work.delay().id, busy, "20 minutes")
    finding = doctor.check_silent_workers(conn, Thresholds())
    assert finding.level is Level.FAIL  # its job waits for a rescue that no one performs
    assert finding.found.startswith("worker busy-worker")
    assert [w["id"] for w in finding.data["silent"]] == [busy, idle]
    # A worker heard from recently is not silent.
    conn.execute("UPDATE pgqueue_workers SET heartbeat_at = now()")
    assert doctor.check_silent_workers(conn, Thresholds()).level is Level.PASS


def test_a_running_job_past_its_tasks_timeout(app: pgqueue.App, conn: Conn) -> None:
    @app.task(timeout=30)
    def limited() -> None: ...

    @app.task
    def unlimited() -> None: ...

    worker = _register_worker(conn, "slow-worker", "0 seconds")
    over, long, fresh = limited.delay().id, unlimited.delay().id, limited.delay().id
    _run_job(conn, over, worker, "5 minutes")
    _run_job(conn, long, worker, "2 hours")
    _run_job(conn, fresh, worker, "10 seconds")
    limits = doctor.time_limits_of(app.tasks)
    assert limits == {limited.name: 30.0}

    finding = doctor.check_long_running_jobs(conn, limits, Thresholds())
    assert finding.level is Level.FAIL
    assert f"job {over} ({limited.name}, queue default, attempt 1) has run for 5 min" in (
        finding.found
    )
    assert "on worker slow-worker, past its 30 s timeout" in finding.found
    assert {j["id"] for j in finding.data["jobs"]} == {over, long}

    # Without the app, only the job running for hours is seen.
    blind = doctor.check_long_running_jobs(conn, None, Thresholds())
    assert blind.level is Level.WARN
    assert f"job {long} ({unlimited.name}" in blind.found
    assert "pass --app" in blind.found
    assert [j.id for j in stuck.long_running_jobs(conn, {}, grace=30, running_for=3 * 3600)] == []


def test_a_schedule_no_scheduler_fires_is_overdue(app: pgqueue.App, conn: Conn) -> None:
    @app.periodic(every=60, name="hourly-report")
    @app.task
    def report() -> None: ...

    @app.periodic(every=60, name="nightly-cleanup")
    @app.task
    def cleanup() -> None: ...

    now = periodic.db_now(conn)
    assert doctor.check_overdue_schedules(conn, Thresholds()).level is Level.PASS
    # Synchronised as a worker does at start, ten minutes ago; no scheduler ran since.
    periodic.sync_schedules(
        conn, [app.schedules["hourly-report"]], now - timedelta(minutes=10), app.tasks
    )
    finding = doctor.check_overdue_schedules(conn, Thresholds())
    assert finding.level is Level.WARN
    assert f"hourly-report (task {report.name}) was due 9 min" in finding.found

    periodic.sync_schedules(conn, [app.schedules["nightly-cleanup"]], now - timedelta(hours=3))
    finding = doctor.check_overdue_schedules(conn, Thresholds())
    assert finding.level is Level.FAIL
    assert finding.found.startswith(f"nightly-cleanup (task {cleanup.name}) was due 2 h 59 min")
    # A scheduler that knows the tasks fires them, and the schedules are on time again.
    periodic.fire_due(conn, app)
    assert doctor.check_overdue_schedules(conn, Thresholds()).level is Level.PASS


# -- the schema, and every check at once ----------------------------------------------------


def test_a_schema_at_an_older_revision_fails_and_the_other_checks_still_run(
    dsn: str, conn: Conn
) -> None:
    migrate.downgrade(dsn, "0006")
    report = doctor.run_checks(conn, _connect(dsn))
    schema = report.findings[0]
    assert (schema.check, schema.level) == ("schema", Level.FAIL)
    assert schema.found == f"at revision 0006; this pgqueue needs {migrate.head_revision()}"
    assert "pgqueue migrate" in schema.advice
    assert report.level is Level.FAIL
    checks = {f.check for f in report.findings}
    assert {"xmin horizon", "dead rows", "silent workers", "overdue schedules"} <= checks
    assert report.not_run == []


def test_a_schema_newer_than_this_pgqueue_warns(conn: Conn) -> None:
    conn.execute("UPDATE pgqueue_alembic_version SET version_num = '0099_from_the_future'")
    finding = doctor.check_schema(conn)
    assert finding.level is Level.WARN
    assert "newer than this pgqueue knows" in finding.found


def test_a_database_without_pgqueue_is_reported_not_crashed_on(empty_dsn: str) -> None:
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        report = doctor.run_checks(conn, _connect(empty_dsn))
    assert report.findings[0].level is Level.FAIL
    assert report.findings[0].found == "pgqueue's tables are not in this database"
    assert "dead rows" in report.not_run and "silent workers" in report.not_run
    assert {f.check for f in report.findings} == {
        "schema",
        "server version",
        "connection pooling",
        "connections",
        "xmin horizon",
        "notification queue",
    }


def test_a_connection_lost_during_the_checks_fails_them_without_crashing(
    dsn: str, conn: Conn
) -> None:
    with psycopg.connect(dsn, autocommit=True) as doomed:
        conn.execute("SELECT pg_terminate_backend(%s)", (doomed.info.backend_pid,))
        report = doctor.run_checks(doomed, _connect(dsn))
    lost = [f for f in report.findings if f.found.startswith("could not check: ")]
    assert {f.check for f in lost} >= {"schema", "xmin horizon", "hot table", "notification queue"}
    assert all(f.level is Level.FAIL for f in lost)
    assert "Run doctor again once the database answers" in lost[0].advice
    assert report.level is Level.FAIL


def test_a_healthy_database_passes_every_check(app: pgqueue.App, dsn: str, conn: Conn) -> None:
    @app.task(timeout=60)
    def quick() -> None: ...

    quick.delay()
    report = doctor.run_checks(conn, _connect(dsn), time_limits=doctor.time_limits_of(app.tasks))
    levels = {f.check: f.level for f in report.findings}
    # The CI server runs with autovacuum off, which doctor reports; everything else passes.
    assert {c for c, level in levels.items() if level is not Level.PASS} <= {"autovacuum"}
    assert report.level is not Level.FAIL
    assert report.to_dict()["findings"][0] == {
        "level": "PASS",
        "check": "schema",
        "found": f"at revision {migrate.head_revision()}, this pgqueue's latest",
        "advice": "",
        "data": {"revision": migrate.head_revision(), "head": migrate.head_revision()},
    }


def test_server_version_is_checked_against_what_pgqueue_supports(conn: Conn) -> None:
    version = server.server_version(conn)
    finding = doctor.check_server_version(conn)
    assert finding.found == f"PostgreSQL {version.text}"
    assert finding.level is (Level.PASS if version.major >= 15 else Level.WARN)


def test_durations_read_as_people_write_them() -> None:
    assert doctor.duration(3.25) == "3.2 s"
    assert doctor.duration(42) == "42 s"
    assert doctor.duration(723) == "12 min 3 s"
    assert doctor.duration(7500) == "2 h 5 min"
    assert doctor.duration(3 * 86400 + 3600) == "3 d 1 h"
    assert doctor.duration(None) == "an unknown time"
