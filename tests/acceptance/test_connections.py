"""What a fleet costs the database.

A worker holds two server connections at rest, whatever its concurrency: the listening one
(LISTEN, its presence lock and heartbeat, the periodic scheduler) and the shared one (claims,
outcomes, progress, maintenance). Connections its tasks opened are closed once no job has run
for REST_AFTER seconds. Counted in pg_stat_activity by the worker's application_name. And an
enqueue wakes WAKE_FANOUT of the idle workers that serve its queue, not all of them.
"""

from __future__ import annotations

import contextlib
import random
import re
import socket
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from pgqueue.claim import WAKE_FANOUT
from pgqueue.worker import REST_AFTER
from tests.acceptance import connections_app as tasks
from tests.acceptance.helpers import WorkerProcess, enqueue
from tests.conftest import wait_until

APP = "tests.acceptance.connections_app:app"


def _count(conn: psycopg.Connection[Any], name: str) -> int:
    row = conn.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
    ).fetchone()
    assert row is not None
    return int(row[0])


def _unfinished(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM pgqueue_jobs").fetchone()
    assert row is not None
    return int(row[0])


def test_a_worker_holds_two_connections_at_rest_whatever_its_concurrency(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    name = f"pgqueue-rest-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess(
        make_conninfo(dsn, application_name=name),
        tmp_path / "worker.log",
        ["--concurrency", "50"],
        app=APP,
    )
    try:
        worker.launch().wait_ready()
        # Ready and idle: the listening connection and the shared one, nothing else (the
        # start-up's own checks have closed theirs).
        wait_until(lambda: _count(conn, name) == 2, timeout=15, what="2 connections once ready")
        for _ in range(20):
            enqueue(conn, tasks.fan_out, 5)
            enqueue(conn, tasks.afan_out, 5)
            enqueue(conn, tasks.in_transaction)
        for _ in range(5):
            enqueue(conn, tasks.with_progress, 20)
        wait_until(lambda: _unfinished(conn) == 0, timeout=60, what="every job finished")
        busy = _count(conn, name)
        assert busy > 2  # the tasks opened connections of their own
        # At rest again: the tasks' connections are closed, the two remain.
        wait_until(
            lambda: _count(conn, name) == 2,
            timeout=REST_AFTER + 30,
            what=f"back to 2 connections at rest (from {busy})",
        )
        failed = conn.execute(
            "SELECT count(*) FROM pgqueue_finished_jobs WHERE status <> 'succeeded'"
        ).fetchone()
        assert failed == (0,)
        done = conn.execute("SELECT count(*) FROM pgqueue_finished_jobs").fetchone()
        assert done == (20 * 5 * 2 + 20 * 3 + 5,)
    finally:
        worker.cleanup()
        print(worker.log())


def _free_ports(count: int) -> int:
    """A port P such that P..P+count-1 are free now."""
    # From a random start: two test runs side by side (CI runs two) must not pick the same.
    start = random.randrange(20_000, 50_000)
    for base in range(start, start + 10_000, count):
        try:
            with contextlib.ExitStack() as stack:
                for port in range(base, base + count):
                    probe = stack.enter_context(socket.socket())
                    probe.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    raise AssertionError("no free range of ports")


def _claims(ports: range) -> float:
    total = 0.0
    for port in ports:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        total += sum(float(m) for m in re.findall(r"^pgqueue_claims_total (\S+)$", text, re.M))
    return total


def test_an_enqueue_wakes_a_few_idle_workers_not_the_whole_fleet(
    dsn: str, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    processes = 6
    base = _free_ports(processes)
    ports = range(base, base + processes)
    # No polling within the test's time: every claim is one a notification caused.
    worker = WorkerProcess(
        dsn,
        tmp_path / "worker.log",
        ["--processes", str(processes), "--poll-interval", "300", "--metrics-port", str(base)],
        app=APP,
    )
    try:
        worker.launch()
        # Every worker has sent a heartbeat since the last one registered: each knows the
        # fleet's size and its place in it.
        wait_until(
            lambda: (
                conn.execute(
                    "SELECT count(*) FROM pgqueue_workers"
                    " WHERE heartbeat_at > (SELECT max(started_at) FROM pgqueue_workers)"
                ).fetchone()
                == (processes,)
            ),
            timeout=60,
            what=f"{processes} workers registered and beating",
        )
        before = _claims(ports)
        enqueues = 12
        for _ in range(enqueues):
            job = tasks.leaf.apply_async(connection=conn)
            wait_until(lambda job=job: _unfinished(conn) == 0, timeout=30, what=f"job {job.id}")
        caused = _claims(ports) - before
        # WAKE_FANOUT claims per enqueue, where every worker used to claim (72 here).
        assert enqueues <= caused <= enqueues * WAKE_FANOUT
    finally:
        worker.cleanup()
        print(worker.log())
