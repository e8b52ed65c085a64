"""The fleet-wide exporter: what a scrape shows of queues, workers, schedules and the database,
how often it reads, and that a database it cannot read is `pgqueue_up 0`, not an error."""

from __future__ import annotations

import re
import threading
import urllib.request
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

import pgqueue
from pgqueue import alerts, metrics
from pgqueue.exporter import FleetReader, exporter_registry
from tests.conftest import WorkerThread, wait_until
from tests.integration.test_worker_metrics import Samples, scrape, value

StartWorker = Callable[..., WorkerThread]
Serve = Callable[..., tuple[FleetReader, int]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """`serve(app, min_interval=0)`: an exporter for `app` on a free port."""
    started: list[tuple[FleetReader, metrics.MetricsServer]] = []

    def start(app: pgqueue.App, min_interval: float = 0.0) -> tuple[FleetReader, int]:
        reader = FleetReader(app, min_interval)
        server = metrics.serve(exporter_registry(reader), "127.0.0.1", 0)
        started.append((reader, server))
        return reader, server.port

    yield start
    for reader, server in started:
        server.close()
        reader.close()


def test_a_scrape_shows_queues_workers_schedules_and_the_database(
    app: pgqueue.App, conn: psycopg.Connection[Any], start_worker: StartWorker, serve: Serve
) -> None:
    release = threading.Event()

    @app.task(queue="mail")
    def send() -> None:
        release.wait(30)  # the test releases it; bounded so a failed test cannot hang

    @app.task(queue="reports")
    def report() -> None: ...

    start_worker(app, queues=("mail",), concurrency=1)
    running = send.delay()
    wait_until(lambda: app.get_job(running.id).status is pgqueue.JobStatus.RUNNING)
    send.delay()  # ready: the one slot is taken
    report.delay()  # ready in a queue no worker serves
    report.delay()
    report.apply_async(countdown=3600)  # scheduled
    conn.execute("INSERT INTO pgqueue_queues (name, paused_at) VALUES ('reports', now())")
    conn.execute(
        "UPDATE pgqueue_jobs SET run_at = run_at - interval '90 seconds'"
        " WHERE queue = 'reports' AND run_at <= now()"
    )
    conn.execute(
        "INSERT INTO pgqueue_periodic (name, task_name, every_seconds, next_fire_at, source)"
        " VALUES ('stalled', 'ops.report', 3600, %s, 'cli')",
        (datetime.now(timezone.utc) - timedelta(minutes=10),),
    )
    _, port = serve(app)
    samples = scrape(port)
    try:
        assert value(samples, "pgqueue_up") == 1
        for queue, status, count in (
            ("mail", "running", 1),
            ("mail", "ready", 1),
            ("mail", "scheduled", 0),
            ("reports", "ready", 2),
            ("reports", "scheduled", 1),
            ("reports", "running", 0),
        ):
            assert value(samples, "pgqueue_queue_jobs", queue=queue, status=status) == count, (
                queue,
                status,
            )
        age = value(samples, "pgqueue_queue_oldest_ready_age_seconds", queue="reports")
        assert age is not None and 90 <= age < 600
        assert value(samples, "pgqueue_queue_paused", queue="reports") == 1
        assert value(samples, "pgqueue_queue_paused", queue="mail") == 0
        assert value(samples, "pgqueue_queue_workers", queue="mail") == 1
        assert value(samples, "pgqueue_queue_workers", queue="reports") == 0
        assert value(samples, "pgqueue_workers_alive") == 1
        assert value(samples, "pgqueue_schedules_overdue") == 1
        overdue = value(samples, "pgqueue_schedule_overdue_seconds", schedule="stalled")
        assert overdue is not None and 600 <= overdue < 3600
        live = value(samples, "pgqueue_hot_table_live_tuples")
        assert live is not None and live >= 0
        assert value(samples, "pgqueue_hot_table_dead_tuples") is not None
        read = value(samples, "pgqueue_exporter_read_seconds")
        assert read is not None and 0 < read < 10
    finally:
        release.set()


def test_the_xmin_horizon_age_is_that_of_the_oldest_open_transaction(
    app: pgqueue.App, dsn: str, serve: Serve
) -> None:
    _, port = serve(app)
    assert value(scrape(port), "pgqueue_xmin_horizon_age_seconds") == 0
    with psycopg.connect(dsn) as holder:
        holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT count(*) FROM pgqueue_jobs")  # takes the snapshot
        wait_until(
            lambda: (value(scrape(port), "pgqueue_xmin_horizon_age_seconds") or 0) >= 1.0,
            what="the held snapshot to show as the horizon's age",
        )
        holder.rollback()
    wait_until(lambda: value(scrape(port), "pgqueue_xmin_horizon_age_seconds") == 0)


def test_scrapes_within_the_min_interval_share_one_read(app: pgqueue.App, serve: Serve) -> None:
    @app.task(queue="q")
    def noop() -> None: ...

    reader, port = serve(app, min_interval=3600)
    first = scrape(port)
    noop.delay()
    assert scrape(port) == first  # the same reading, not a new one
    assert value(first, "pgqueue_queue_jobs", queue="q", status="ready") is None
    reader.min_interval = 0
    assert value(scrape(port), "pgqueue_queue_jobs", queue="q", status="ready") == 1


def _up(samples: Samples) -> float | None:
    return value(samples, "pgqueue_up")


def test_a_database_that_is_down_is_pgqueue_up_0_and_the_exporter_goes_on(
    serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    down = pgqueue.App("postgresql://postgres@127.0.0.1:1/none?connect_timeout=2")
    _, port = serve(down)
    for _ in range(2):
        samples = scrape(port)  # an HTTP 200 each time, or urlopen would raise
        assert _up(samples) == 0
        assert value(samples, "pgqueue_exporter_read_seconds") is not None
        assert value(samples, "pgqueue_workers_alive") is None
    warnings = [r for r in caplog.records if "cannot read the database" in r.getMessage()]
    assert len(warnings) == 1  # once, not once per scrape


def test_an_unmigrated_database_is_pgqueue_up_0_with_the_reason_logged(
    empty_dsn: str, serve: Serve, caplog: pytest.LogCaptureFixture
) -> None:
    unmigrated = pgqueue.App(empty_dsn)
    _, port = serve(unmigrated)
    assert _up(scrape(port)) == 0
    assert any("pgqueue migrate" in r.getMessage() for r in caplog.records)
    unmigrated.close()


def test_a_lost_connection_is_made_again_within_the_same_scrape(
    app: pgqueue.App, conn: psycopg.Connection[Any], serve: Serve
) -> None:
    reader, port = serve(app)
    assert _up(scrape(port)) == 1
    assert reader._conn is not None
    pid = reader._conn.info.backend_pid
    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    wait_until(
        lambda: conn.execute(
            "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()[0]  # type: ignore[index]
    )
    assert _up(scrape(port)) == 1
    assert reader._conn is not None and reader._conn.info.backend_pid != pid


def test_a_scrape_is_an_http_200_with_the_text_format(app: pgqueue.App, serve: Serve) -> None:
    _, port = serve(app)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        assert b"# TYPE pgqueue_queue_jobs gauge" in response.read()


def test_every_metric_the_alert_rules_use_is_served(
    app: pgqueue.App, start_worker: StartWorker, serve: Serve
) -> None:
    @app.task
    def noop() -> None: ...

    worker = start_worker(app)
    noop.delay().wait(timeout=15)
    worker_server = metrics.serve(metrics.worker_registry(worker.worker), "127.0.0.1", 0)
    try:
        served = _names(worker_server.port)
    finally:
        worker_server.close()
    _, port = serve(app)
    served |= _names(port)
    used = set(re.findall(r"\bpgqueue_[a-z_]+\b", alerts.rules_text()))
    assert used, "no metric found in the rules"
    assert used <= served, f"the rules use metrics nobody serves: {sorted(used - served)}"


def _names(port: int) -> set[str]:
    """Every metric (family, also one without samples now) and sample name a scrape shows."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        families = list(text_string_to_metric_families(response.read().decode()))
    return {family.name for family in families} | {
        sample.name for family in families for sample in family.samples
    }
