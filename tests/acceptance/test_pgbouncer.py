"""Real `pgqueue worker` processes behind a real PgBouncer in transaction mode (two server
connections per database): the worker's DSN and the enqueueing go through the pooler, its
session-bound connection (`--listen-dsn`) goes straight to the server. A kill -9 mid-run loses
nothing; a worker whose session-bound connection would go through the pooler refuses to start.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.acceptance import apps
from tests.acceptance.helpers import APP, WorkerProcess, enqueue, set_flag, stop_gracefully
from tests.acceptance.test_cli import one_line_error, pgqueue
from tests.conftest import wait_until
from tests.servers import PgBouncer

JOBS = 200
POOLING = {"PGQUEUE_TRANSACTION_POOLING": "1"}


@pytest.fixture
def bouncer(dsn: str) -> Iterator[PgBouncer]:
    server = PgBouncer(dsn, pool_mode="transaction", pool_size=2)
    yield server
    server.stop()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.cleanup()
    for worker in started:
        print(f"----- {worker.log_path.name}: {' '.join(worker.command[2:])}")
        print(worker.log())


def pooled_worker(
    workers: list[WorkerProcess], tmp_path: Path, bouncer: PgBouncer, dsn: str, name: str
) -> WorkerProcess:
    worker = WorkerProcess(
        bouncer.dsn,
        tmp_path / f"{name}.log",
        ["--name", name, "--listen-dsn", dsn, "--concurrency", "4", "--poll-interval", "0.5"],
        env=POOLING,
    )
    workers.append(worker)
    return worker.launch().wait_ready()


def succeeded(db: psycopg.Connection[Any], ids: list[int]) -> int:
    row = db.execute(
        "SELECT count(*) FROM pgqueue_all_jobs WHERE id = ANY(%s) AND status = 'succeeded'",
        (ids,),
    ).fetchone()
    assert row is not None
    return int(row[0])


def started(db: psycopg.Connection[Any], job_id: int) -> bool:
    row = db.execute("SELECT 1 FROM acceptance_executions WHERE job_id = %s", (job_id,)).fetchone()
    return row is not None


def test_kill_9_behind_a_transaction_pooler_loses_no_job(
    dsn: str,
    db: psycopg.Connection[Any],
    bouncer: PgBouncer,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    with psycopg.connect(bouncer.dsn, autocommit=True, prepare_threshold=None) as pooled:
        # One job runs until its flag is set, so the doomed worker surely holds it when killed.
        held = enqueue(pooled, apps.block, "after-the-kill")
        ids = [enqueue(pooled, apps.steady, n, 0.05) for n in range(JOBS)]
    doomed = pooled_worker(workers, tmp_path, bouncer, dsn, "doomed")
    wait_until(
        lambda: started(db, held) and succeeded(db, ids) >= 40, timeout=60, what="40 jobs done"
    )
    assert doomed.kill() == -signal.SIGKILL
    assert succeeded(db, ids) < JOBS, "killed mid-run"

    rescuer = pooled_worker(workers, tmp_path, bouncer, dsn, "rescuer")
    set_flag(db, "after-the-kill")
    wait_until(lambda: succeeded(db, [held, *ids]) == JOBS + 1, timeout=120, what="every job done")
    rows = db.execute(
        "SELECT count(DISTINCT job_id) FROM acceptance_executions WHERE job_id = ANY(%s)",
        (ids,),
    ).fetchone()
    assert rows == (JOBS,)
    results = db.execute(
        "SELECT result FROM pgqueue_all_jobs WHERE id = ANY(%s) ORDER BY id", (ids,)
    ).fetchall()
    assert [row[0] for row in results] == list(range(JOBS))
    # The worker rescued the dead one's jobs, the one it surely held among them.
    assert rescuer.log_lines(
        f"job {held} tests.acceptance.apps.block attempt 1/3: its worker was lost"
    )
    # Behind the pooler, pgqueue prepared nothing and set nothing the pooler does not track.
    assert "prepared statement" not in rescuer.log() + doomed.log()
    assert stop_gracefully(rescuer) == 0


def test_a_worker_behind_a_transaction_pooler_without_a_listen_dsn_refuses_to_start(
    bouncer: PgBouncer,
) -> None:
    result = pgqueue("worker", "--app", APP, dsn=bouncer.dsn, env=POOLING)
    assert result.returncode == 2
    line = one_line_error(result)
    assert "--listen-dsn or PGQUEUE_LISTEN_DSN" in line, line


def test_a_listen_dsn_through_a_transaction_pooler_is_detected_at_start(
    dsn: str, bouncer: PgBouncer
) -> None:
    # Transaction pooling not declared: the worker finds out by itself.
    result = pgqueue("worker", "--app", APP, dsn=bouncer.dsn)
    assert result.returncode == 2
    line = one_line_error(result)
    assert "(--dsn) goes through a pooler in transaction mode" in line, line
    # Declared, with a listen DSN that goes through the pooler too.
    result = pgqueue("worker", "--app", APP, "--listen-dsn", bouncer.dsn, dsn=dsn, env=POOLING)
    assert result.returncode == 2
    line = one_line_error(result)
    assert "(--listen-dsn) goes through a pooler in transaction mode" in line, line


def test_doctor_probes_the_listen_dsn(dsn: str, bouncer: PgBouncer) -> None:
    def pooling(**env: str) -> dict[str, Any]:
        result = pgqueue("doctor", "--json", dsn=bouncer.dsn, env=env)
        report = json.loads(result.stdout)
        found: dict[str, Any] = next(
            f for f in report["findings"] if f["check"] == "connection pooling"
        )
        return found

    refused = pooling()
    assert refused["level"] == "FAIL"
    assert "PGQUEUE_LISTEN_DSN" in refused["advice"]
    assert pooling(PGQUEUE_LISTEN_DSN=dsn, **POOLING)["level"] == "PASS"


def test_a_malformed_listen_dsn_is_a_one_line_error(dsn: str) -> None:
    result = pgqueue("worker", "--app", APP, "--listen-dsn", "not a dsn==", dsn=dsn)
    assert result.returncode == 2
    assert one_line_error(result).startswith("pgqueue: error: invalid listen DSN"), result.stderr
