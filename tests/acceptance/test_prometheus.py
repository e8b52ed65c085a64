"""A real Prometheus server scrapes a real `pgqueue worker --metrics-port` and loads the shipped
alert rules; the series are read back through Prometheus' HTTP API."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgqueue import alerts
from tests.acceptance import apps
from tests.acceptance.conftest import SpawnWorker
from tests.acceptance.helpers import enqueue, wait_for_status
from tests.acceptance.prometheus import Prometheus, free_port
from tests.conftest import wait_until

RULES = Path(str(resources.files("pgqueue.alerts").joinpath(alerts.RULES_FILE)))
StartPrometheus = Callable[..., Prometheus]


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
