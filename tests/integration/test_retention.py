"""Retention: finished jobs are pruned, by `pgqueue jobs prune` and by the workers on their own."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

import pgqueue
from pgqueue.config import parse_duration
from tests.conftest import WorkerThread, wait_until

StartWorker = Callable[..., WorkerThread]


def _jobs(app: pgqueue.App, conn: psycopg.Connection[Any]) -> dict[str, int]:
    """One job in each state, the finished ones finished 2 hours or 1 minute ago."""

    @app.task
    def noop() -> None: ...

    ids = {
        name: noop.delay().id
        for name in ("queued", "running", "old_ok", "old_failed", "old_cancelled", "recent_ok")
    }
    for name, status, age in (
        ("running", "running", None),
        ("old_ok", "succeeded", "2 hours"),
        ("old_failed", "failed", "2 hours"),
        ("old_cancelled", "cancelled", "2 hours"),
        ("recent_ok", "succeeded", "1 minute"),
    ):
        if status == "running":
            conn.execute(
                "UPDATE pgqueue_jobs SET status = 'running', queue = 'idle' WHERE id = %s",
                (ids[name],),
            )
            continue
        conn.execute(
            "WITH ended AS (DELETE FROM pgqueue_jobs WHERE id = %s RETURNING *)"
            " INSERT INTO pgqueue_finished_jobs (id, queue, task_name, args, kwargs, status,"
            "  priority, run_at, attempts, max_attempts, created_at, finished_at)"
            " SELECT id, 'idle', task_name, args, kwargs, %s::pgqueue_job_status, priority,"
            "  run_at, attempts, max_attempts, created_at, now() - %s::interval FROM ended",
            (ids[name], status, age),
        )
    conn.execute("UPDATE pgqueue_jobs SET queue = 'idle' WHERE id = %s", (ids["queued"],))
    return ids


def _remaining(conn: psycopg.Connection[Any], ids: dict[str, int]) -> set[str]:
    present = {row[0] for row in conn.execute("SELECT id FROM pgqueue_all_jobs")}
    return {name for name, job_id in ids.items() if job_id in present}


def test_prune_deletes_only_jobs_finished_before_the_cutoff(
    app: pgqueue.App, conn: psycopg.Connection[Any], dsn: str
) -> None:
    ids = _jobs(app, conn)
    result = subprocess.run(
        [sys.executable, "-m", "pgqueue", "jobs", "prune", "--older-than", "1h", "--dsn", dsn],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "deleted 3 job(s)" in result.stdout
    assert _remaining(conn, ids) == {"queued", "running", "recent_ok"}


def test_prune_can_keep_failed_jobs_for_inspection(
    app: pgqueue.App, conn: psycopg.Connection[Any], dsn: str
) -> None:
    ids = _jobs(app, conn)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pgqueue",
            "jobs",
            "prune",
            "--older-than",
            "30m",
            "--status",
            "succeeded,cancelled",
            "--dsn",
            dsn,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert _remaining(conn, ids) == {"queued", "running", "old_failed", "recent_ok"}


PGQUEUE = (sys.executable, "-m", "pgqueue")


def test_prune_answers_in_json_for_scripts(
    app: pgqueue.App, conn: psycopg.Connection[Any], dsn: str
) -> None:
    ids = _jobs(app, conn)
    result = subprocess.run(
        [*PGQUEUE, "jobs", "prune", "--older-than", "1h", "--json", "--dsn", dsn],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "deleted": 3,
        "older_than_seconds": 3600.0,
        "statuses": ["succeeded", "failed", "cancelled"],
    }
    assert _remaining(conn, ids) == {"queued", "running", "recent_ok"}


def test_workers_prune_on_their_own(
    app: pgqueue.App, conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    ids = _jobs(app, conn)
    start_worker(app, queues=("other",), retention=3600.0, prune_interval=0.2)
    wait_until(
        lambda: _remaining(conn, ids) == {"queued", "running", "recent_ok"},
        what="the worker to prune",
    )


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("90s", 90),
        ("15m", 900),
        ("12h", 43200),
        ("7d", 604800),
        ("2w", 1209600),
        ("0", 0),
        ("1.5h", 5400),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7 days", "-1d", "d", "1y"])
def test_bad_durations_say_how_to_write_one(text: str) -> None:
    with pytest.raises(pgqueue.ConfigurationError, match="use a number of seconds"):
        parse_duration(text)
