"""What a worker records of its own work: running attempts, claims, rescues it performs and the
connections it loses (what its Prometheus endpoint serves)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import psycopg

import pgqueue
from pgqueue import queries
from pgqueue.claim import claim_params
from tests.conftest import WorkerThread, wait_until

StartWorker = Callable[..., WorkerThread]


def test_running_attempts_and_claims_are_counted(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    release = threading.Event()

    @app.task(queue="held")
    def held() -> None:
        release.wait(30)  # the test releases it; bounded so a failed test cannot hang

    worker = start_worker(app, concurrency=4).worker
    jobs = [held.delay() for _ in range(3)]
    wait_until(
        lambda: worker.observations.snapshot().running.get("held") == 3,
        what="3 running attempts of queue 'held'",
    )
    release.set()
    for job in jobs:
        job.wait(timeout=15)
    wait_until(lambda: worker.observations.snapshot().running.get("held") == 0)
    snapshot = worker.observations.snapshot()
    assert snapshot.finished == {("held", held.name, "succeeded"): 3}
    # Every claim statement is counted, the empty ones too; together they took the 3 jobs.
    assert snapshot.claims == sum(snapshot.claim_sizes.counts) >= 1
    assert snapshot.claim_sizes.total == 3
    assert sum(snapshot.wait["held"].counts) == 3
    assert sum(snapshot.duration["held", held.name].counts) == 3


def test_rescues_this_worker_performs_are_counted(
    app: pgqueue.App, conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    @app.task
    def noop() -> None: ...

    job = noop.delay()
    # A worker whose heartbeat stopped a minute ago claimed the job: it is lost.
    row = conn.execute(
        "INSERT INTO pgqueue_workers (name, hostname, pid, queues, concurrency, heartbeat_at)"
        " VALUES ('gone', 'nowhere', 1, '{default}', 1, now() - interval '60 seconds')"
        " RETURNING id"
    ).fetchone()
    assert row is not None
    conn.execute(queries.CLAIM_JOBS, claim_params(["default"], 1, row[0]))

    worker = start_worker(app, heartbeat_timeout=30.0).worker
    job.wait(timeout=15)
    snapshot = worker.observations.snapshot()
    assert snapshot.rescued == 1
    assert snapshot.finished == {("default", noop.name, "succeeded"): 1}


def test_lost_connections_are_counted_by_connection(
    app: pgqueue.App, conn: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    @app.task
    def noop() -> None: ...

    worker = start_worker(app).worker
    noop.delay().wait(timeout=15)  # every connection of the worker is made
    # Every connection of the worker: not the test's, nor the one the test enqueues on.
    conn.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid() AND pid <> %s",
        (app._shared_connection().info.backend_pid,),
    )
    # The loops sharing the second connection learn of it when they next use it: one loss,
    # however many of them meet it.
    noop.delay().wait(timeout=30)
    wanted = {"notifier", "shared"}
    wait_until(
        lambda: set(worker.observations.snapshot().connection_losses) == wanted,
        what=f"a loss counted on each of {wanted}",
    )
    assert all(n == 1 for n in worker.observations.snapshot().connection_losses.values())
