"""The `pgqueue` command line, run as a user runs it: `python -m pgqueue ...` in a subprocess.

Every error a user can meet ends with one line on stderr, no traceback, and a non-zero exit.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import psycopg
import pytest

from pgqueue import migrate
from tests.acceptance.helpers import APP, subprocess_env
from tests.conftest import ROOT, wait_until
from tests.integration.test_schema import schema_diff

UNREACHABLE_DSN = "postgresql://postgres@127.0.0.1:1/x"
MALFORMED_DSN = "not a dsn=="


def pgqueue(
    *args: str, dsn: str | None = None, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m pgqueue *args` from the repository root, PGQUEUE_DSN=`dsn` if given,
    with `env` added to the environment."""
    return subprocess.run(
        [sys.executable, "-m", "pgqueue", *args],
        cwd=ROOT,
        env=subprocess_env(dsn, **(env or {})),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """Assert the command failed the way a user should see it fail; return the line."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0, result
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1, result.stderr
    return lines[0]


def table_exists(dsn: str, name: str) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(row and row[0])


@pytest.mark.parametrize(
    "command",
    [["worker", "--app", APP], ["migrate"], ["status"]],
    ids=["worker", "migrate", "status"],
)
def test_malformed_dsn_is_a_one_line_error(command: list[str]) -> None:
    line = one_line_error(pgqueue(*command, "--dsn", MALFORMED_DSN))
    assert "invalid DSN" in line


@pytest.mark.parametrize(
    "command",
    [["worker", "--app", APP], ["migrate"], ["status"]],
    ids=["worker", "migrate", "status"],
)
def test_unreachable_database_is_a_one_line_error(command: list[str]) -> None:
    line = one_line_error(pgqueue(*command, "--dsn", UNREACHABLE_DSN))
    assert "could not connect" in line


def test_worker_on_unmigrated_database_says_to_run_migrate(empty_dsn: str) -> None:
    line = one_line_error(pgqueue("worker", "--app", APP, dsn=empty_dsn))
    assert "pgqueue migrate" in line


@pytest.mark.parametrize(
    ("app", "message"),
    [
        ("tests.acceptance.no_such_module:app", "cannot import"),
        ("tests.acceptance.apps:NOT_AN_APP", "not a pgqueue.App"),
    ],
    ids=["missing-module", "not-an-app"],
)
def test_bad_app_is_a_one_line_error(dsn: str, app: str, message: str) -> None:
    line = one_line_error(pgqueue("worker", "--app", app, dsn=dsn))
    assert message in line
    assert app in line


def test_migrate_creates_the_schema_and_a_second_run_is_a_no_op(empty_dsn: str) -> None:
    first = pgqueue("migrate", dsn=empty_dsn)
    assert first.returncode == 0, first.stderr
    assert "pgqueue schema at revision" in first.stdout
    assert table_exists(empty_dsn, "pgqueue_jobs")
    assert table_exists(empty_dsn, "pgqueue_workers")
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO pgqueue_jobs (task_name) VALUES ('kept.across.migrate')")

    second = pgqueue("migrate", dsn=empty_dsn)
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        rows: list[Any] = conn.execute("SELECT task_name FROM pgqueue_all_jobs").fetchall()
    assert rows == [("kept.across.migrate",)], "the second run changed nothing"


def test_migrate_run_by_several_processes_at_once_succeeds_everywhere(
    empty_dsn: str, server_dsn: str
) -> None:
    # As `docker compose up --scale app=5` does: every container migrates the same fresh
    # database at the same moment. Each must exit 0 and the schema must come out whole.
    # A gate makes "at the same moment" certain: every process's first catalog read waits
    # behind this lock, so all five start looking at the schema together when it opens.
    count = 5
    gate = psycopg.connect(empty_dsn)
    gate.execute("LOCK TABLE pg_catalog.pg_namespace IN ACCESS EXCLUSIVE MODE")
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "pgqueue", "migrate"],
            cwd=ROOT,
            env=subprocess_env(empty_dsn),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    try:

        def all_at_the_gate() -> bool:
            # Asked from another database: a session here would wait at the gate too.
            with psycopg.connect(server_dsn, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = %s AND wait_event_type = 'Lock'",
                    (gate.info.dbname,),
                ).fetchone()
            return row is not None and row[0] >= count

        wait_until(all_at_the_gate, timeout=60, interval=0.1, what="every migrate at the gate")
    finally:
        gate.close()
    results = [process.communicate(timeout=120) for process in processes]
    for process, (stdout, stderr) in zip(processes, results, strict=True):
        assert process.returncode == 0, stderr
        assert "pgqueue schema at revision" in stdout
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        assert migrate.current_revision(conn) == migrate.head_revision()
        versions = conn.execute("SELECT count(*) FROM pgqueue_alembic_version").fetchone()
    assert versions == (1,)
    assert schema_diff(empty_dsn) == []


def test_migrate_sql_prints_the_schema_without_a_database() -> None:
    # An unreachable DSN: printing the SQL must not need (or try) a connection.
    result = pgqueue("migrate", "--sql", "--dsn", UNREACHABLE_DSN)
    assert result.returncode == 0, result.stderr
    assert "CREATE TABLE pgqueue_jobs" in result.stdout
    assert "Traceback" not in result.stderr


def test_migrate_downgrade_base_removes_the_tables(dsn: str) -> None:
    assert table_exists(dsn, "pgqueue_jobs")
    result = pgqueue("migrate", "--downgrade", "base", dsn=dsn)
    assert result.returncode == 0, result.stderr
    with psycopg.connect(dsn, autocommit=True) as conn:
        left = conn.execute(
            "SELECT relname FROM pg_class WHERE relname LIKE 'pgqueue%%'"
            " UNION ALL SELECT typname FROM pg_type WHERE typname LIKE 'pgqueue%%'"
        ).fetchall()
    # Only alembic's own bookkeeping (its version table, now empty) stays behind.
    assert {name for (name,) in left} <= {"pgqueue_alembic_version", "pgqueue_alembic_version_pkc"}
    # ... and the worker now refuses to start, saying what to do.
    assert "pgqueue migrate" in one_line_error(pgqueue("worker", "--app", APP, dsn=dsn))


@pytest.mark.parametrize(
    "command",
    [["--help"], ["worker", "--help"], ["migrate", "--help"], ["status", "--help"], ["--version"]],
    ids=["pgqueue", "worker", "migrate", "status", "version"],
)
def test_help_and_version_exit_zero(command: list[str]) -> None:
    result = pgqueue(*command)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: pgqueue") or result.stdout.startswith("pgqueue ")
    assert result.stderr == ""


@pytest.mark.parametrize("value", ["-1", "101"])
def test_a_claim_ahead_out_of_range_is_a_one_line_error_before_the_worker_registers(
    dsn: str, value: str
) -> None:
    line = one_line_error(pgqueue("worker", "--app", APP, "--claim-ahead", value, dsn=dsn))
    assert f"--claim-ahead) must be a whole number of jobs per slot from 0 to 100, got {value}" in (
        line
    )
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pgqueue_workers").fetchone() == (0,)


def test_worker_help_lists_its_options() -> None:
    result = pgqueue("worker", "--help")
    for option in (
        "--app",
        "--dsn",
        "--queues",
        "--concurrency",
        "--shutdown-timeout",
        "--processes",
        "--claim-ahead",
    ):
        assert option in result.stdout
