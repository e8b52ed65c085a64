"""A real Prometheus server scrapes a real `pgqueue worker --metrics-port` and a real
`pgqueue exporter`, and loads the shipped alert rules; the series are read back through
Prometheus' HTTP API. The exporter outlives its database."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgqueue import alerts
from tests.acceptance import apps
from tests.acceptance.conftest import SpawnWorker
from tests.acceptance.helpers import enqueue, subprocess_env, wait_for_status
from tests.acceptance.prometheus import Prometheus, free_port
from tests.conftest import ROOT, wait_until
from tests.integration.test_worker_metrics import scrape, value

RULES = Path(str(resources.files("pgqueue.alerts").joinpath(alerts.RULES_FILE)))
StartPrometheus = Callable[..., Prometheus]
SpawnExporter = Callable[[str], "Exporter"]


class Exporter:
    """A `pgqueue exporter` process on a free port, reading every 0.5 s at most."""

    def __init__(self, dsn: str, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pgqueue",
                "exporter",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--min-interval",
                "0.5",
            ],
            cwd=ROOT,
            env=subprocess_env(dsn),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(
            lambda: "exporter serving" in self.log() or self.process.poll() is not None,
            timeout=60,
            what="the exporter to start",
        )
        assert self.process.poll() is None, self.log()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cleanup(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)
        self._log.close()


@pytest.fixture
def spawn_exporter(tmp_path: Path) -> Iterator[SpawnExporter]:
    started: list[Exporter] = []

    def start(dsn: str) -> Exporter:
        exporter = Exporter(dsn, tmp_path / f"exporter-{len(started) + 1}.log")
        started.append(exporter)
        return exporter

    try:
        yield start
    finally:
        for exporter in started:
            exporter.cleanup()
            print(f"----- {exporter.log_path.name}")
            print(exporter.log())


@pytest.fixture
def start_prometheus(tmp_path: Path) -> Iterator[StartPrometheus]:
    started: list[Prometheus] = []

    def start(targets: dict[str, list[str]]) -> Prometheus:
        workdir = tmp_path / f"prometheus-{len(started) + 1}"
        workdir.mkdir()
        server = Prometheus(workdir, targets, rule_files=[RULES])
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.cleanup()
            print(f"----- {server.log_path}")
            print(server.log())


def test_prometheus_scrapes_a_worker_and_loads_the_alert_rules(
    db: psycopg.Connection[Any], spawn_worker: SpawnWorker, start_prometheus: StartPrometheus
) -> None:
    port = free_port()
    worker = spawn_worker("--metrics-host", "127.0.0.1", "--metrics-port", str(port))
    prometheus = start_prometheus({"pgqueue-worker": [f"127.0.0.1:{port}"]})

    done = [enqueue(db, apps.record, n) for n in range(5)]
    failing = enqueue(db, apps.always_fails)
    for job_id in done:
        wait_for_status(db, job_id, "succeeded")
    wait_for_status(db, failing, "failed")

    finished = (
        'pgqueue_jobs_finished_total{{job="pgqueue-worker",task="{task}",outcome="{outcome}"}}'
    )
    prometheus.wait_for(finished.format(task=apps.record.name, outcome="succeeded"), 5)
    prometheus.wait_for(finished.format(task=apps.always_fails.name, outcome="retried"), 1)
    prometheus.wait_for(finished.format(task=apps.always_fails.name, outcome="failed"), 1)
    assert (
        prometheus.value(f'pgqueue_attempt_duration_seconds_count{{task="{apps.record.name}"}}')
        == 5
    )
    assert prometheus.value('sum(pgqueue_pickup_wait_seconds_count{queue="default"})') == 7
    assert (
        prometheus.value(f'pgqueue_retries_scheduled_total{{task="{apps.always_fails.name}"}}') == 1
    )
    assert prometheus.value('pgqueue_jobs_running{queue="default"}') == 0
    info = prometheus.query("pgqueue_worker_info")
    assert [dict(labels)["name"] for labels in info] == [worker.name]
    assert prometheus.value("up") == 1

    # The shipped rules load, and each evaluates without error against real series.
    def rules_healthy() -> bool:
        groups = prometheus.api("rules")["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return len(rules) == 8 and all(rule["health"] == "ok" for rule in rules)

    wait_until(rules_healthy, timeout=30, what="the 8 alert rules evaluated, healthy")
    assert prometheus.stop() == 0


def test_prometheus_scrapes_the_exporter_beside_a_worker(
    dsn: str,
    db: psycopg.Connection[Any],
    spawn_worker: SpawnWorker,
    spawn_exporter: SpawnExporter,
    start_prometheus: StartPrometheus,
) -> None:
    worker_port = free_port()
    spawn_worker("--metrics-host", "127.0.0.1", "--metrics-port", str(worker_port))
    exporter = spawn_exporter(dsn)
    prometheus = start_prometheus(
        {
            "pgqueue-worker": [f"127.0.0.1:{worker_port}"],
            "pgqueue-exporter": [f"127.0.0.1:{exporter.port}"],
        }
    )
    # Three jobs wait in a paused queue that no worker serves; one is done by the worker.
    db.execute("INSERT INTO pgqueue_queues (name, paused_at) VALUES ('parked', now())")
    for n in range(3):
        apps.record.apply_async(args=(n,), queue="parked", connection=db)
    wait_for_status(db, enqueue(db, apps.record, 9), "succeeded")

    prometheus.wait_for('pgqueue_up{job="pgqueue-exporter"}', 1)
    prometheus.wait_for('pgqueue_queue_jobs{queue="parked",status="ready"}', 3)
    prometheus.wait_for('pgqueue_queue_paused{queue="parked"}', 1)
    prometheus.wait_for('pgqueue_queue_workers{queue="parked"}', 0)
    prometheus.wait_for('pgqueue_queue_workers{queue="default"}', 1)
    prometheus.wait_for("pgqueue_workers_alive", 1)
    prometheus.wait_for("pgqueue_schedules_overdue", 0)
    assert prometheus.value("pgqueue_xmin_horizon_age_seconds") is not None
    assert prometheus.value("pgqueue_hot_table_live_tuples") is not None
    # Worker counters and exporter gauges side by side, as the alert rules join them.
    prometheus.wait_for(
        f'sum(pgqueue_jobs_finished_total{{task="{apps.record.name}",outcome="succeeded"}})', 1
    )
    assert prometheus.stop() == 0


def test_the_exporter_outlives_its_database(
    server_dsn: str, dsn: str, spawn_exporter: SpawnExporter
) -> None:
    exporter = spawn_exporter(dsn)
    assert value(scrape(exporter.port), "pgqueue_up") == 1
    dbname = psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE "{dbname}" WITH (FORCE)')
    wait_until(
        lambda: value(scrape(exporter.port), "pgqueue_up") == 0,
        what="pgqueue_up 0 once the database is gone",
    )
    assert value(scrape(exporter.port), "pgqueue_up") == 0  # and again: still serving
    assert exporter.process.poll() is None
    assert "cannot read the database" in exporter.log()
    exporter.process.send_signal(signal.SIGTERM)
    assert exporter.process.wait(30) == 0
