"""`pgqueue doctor` run as a user runs it, against conditions provoked for real: a REPEATABLE
READ transaction held open, a worker process frozen by SIGSTOP with its job past the task's
timeout, a database without pgqueue's tables, a server that does not answer."""

from __future__ import annotations

import json
import signal
from typing import Any

import psycopg
from psycopg import IsolationLevel

from pgqueue import migrate
from tests.acceptance import apps
from tests.acceptance.conftest import SpawnWorker
from tests.acceptance.helpers import APP, enqueue, wait_started
from tests.acceptance.test_cli import UNREACHABLE_DSN, one_line_error, pgqueue
from tests.conftest import wait_until

Conn = psycopg.Connection[Any]


def _findings(stdout: str) -> dict[str, dict[str, Any]]:
    report = json.loads(stdout)
    return {finding["check"]: finding for finding in report["findings"]}


def test_doctor_names_the_pid_of_a_transaction_holding_the_horizon(dsn: str) -> None:
    with psycopg.connect(dsn, application_name="nightly-export") as holder:
        holder.isolation_level = IsolationLevel.REPEATABLE_READ
        holder.execute("SELECT count(*) FROM pgqueue_finished_jobs")
        pid = holder.info.backend_pid

        warned = pgqueue("doctor", "--json", "--xmin-warn", "0", dsn=dsn)
        assert warned.returncode == 0, warned.stderr  # warnings do not fail
        horizon = _findings(warned.stdout)["xmin horizon"]
        assert horizon["level"] == "WARN"
        assert horizon["data"]["holders"][0]["pid"] == pid
        assert horizon["data"]["holders"][0]["application_name"] == "nightly-export"

        failed = pgqueue("doctor", "--xmin-warn", "0", "--xmin-fail", "0", dsn=dsn)
        assert failed.returncode == 1, failed.stderr
        assert failed.stderr == ""
        lines = failed.stdout.splitlines()
        line = next(line for line in lines if line.startswith("FAIL  xmin horizon"))
        assert f"pid {pid} (application 'nightly-export'" in line
        assert f"pg_terminate_backend({pid})" in " ".join(line.strip() for line in lines)
        assert lines[-1].startswith("12 checks: ")


def test_doctor_names_a_frozen_worker_and_its_job_past_the_timeout(
    dsn: str, db: Conn, spawn_worker: SpawnWorker
) -> None:
    worker = spawn_worker()
    job_id = enqueue(db, apps.block_with_timeout, "never-set")
    wait_started(db, job_id)
    worker.send(signal.SIGSTOP)  # before the task's 5 s timeout: the attempt cannot end now
    try:
        wait_until(
            lambda: (
                db.execute(
                    "SELECT now() - started_at > interval '6.5 seconds' AND status = 'running'"
                    " FROM pgqueue_jobs WHERE id = %s",
                    (job_id,),
                ).fetchone()
                == (True,)
            ),
            timeout=30,
            what="the job to be past its timeout and the grace",
        )
        args = ["doctor", "--app", APP, "--heartbeat-timeout", "3s", "--overrun-grace", "1s"]
        result = pgqueue(*args, "--json", dsn=dsn)
        assert result.returncode == 1, result.stderr
        findings = _findings(result.stdout)

        running = findings["long-running jobs"]
        assert running["level"] == "FAIL"
        assert (
            f"job {job_id} ({apps.block_with_timeout.name}, queue default, attempt 1)"
            in (running["found"])
        )
        assert f"on worker {worker.name}, past its 5.0 s timeout" in running["found"]

        silent = findings["silent workers"]
        assert silent["level"] == "FAIL"
        assert silent["found"].startswith(f"worker {worker.name} (host ")
        assert f"pid {worker.pid}) last sent a heartbeat" in silent["found"]
        assert "1 running job(s)" in silent["found"]

        table = pgqueue(*args, dsn=dsn)
        assert table.returncode == 1
        assert any(line.startswith("FAIL  silent workers") for line in table.stdout.splitlines())
    finally:
        worker.send(signal.SIGCONT)


def test_doctor_reports_a_database_without_pgqueue_instead_of_failing(empty_dsn: str) -> None:
    result = pgqueue("doctor", dsn=empty_dsn)
    assert result.returncode == 1
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].startswith("FAIL  schema")
    assert "pgqueue's tables are not in this database" in lines[0]
    assert "Run `pgqueue migrate`" in " ".join(line.strip() for line in lines)
    assert any(line.startswith("not run: dead rows") for line in lines)

    as_json = json.loads(pgqueue("doctor", "--json", dsn=empty_dsn).stdout)
    assert as_json["level"] == "FAIL"
    assert as_json["findings"][0]["data"] == {"revision": None, "head": migrate.head_revision()}


def test_doctor_on_an_unreachable_database_is_a_one_line_error() -> None:
    result = pgqueue("doctor", "--dsn", UNREACHABLE_DSN)
    assert result.returncode == 1
    assert result.stdout == ""
    assert one_line_error(result).startswith("pgqueue: error: could not connect to the database")


def test_doctor_refuses_a_bad_threshold_in_one_line(dsn: str) -> None:
    result = pgqueue("doctor", "--xmin-warn", "soon", dsn=dsn)
    assert result.returncode == 2
    assert "invalid duration 'soon'" in one_line_error(result)
