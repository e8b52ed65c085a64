"""A worker's Prometheus endpoint: what a scrape of /metrics shows after real jobs ran."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Callable, Iterator

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

import pgqueue
from pgqueue import metrics, rollup
from pgqueue.errors import ConfigurationError
from tests.conftest import WorkerThread, wait_until

StartWorker = Callable[..., WorkerThread]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Flaky(ConnectionError):
    """A retryable failure."""


def scrape(port: int) -> Samples:
    """Every sample of http://127.0.0.1:port/metrics, by (name, labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, metric: str, **labels: str) -> float | None:
    return samples.get((metric, frozenset(labels.items())))


@pytest.fixture
def serve() -> Iterator[Callable[[WorkerThread], metrics.MetricsServer]]:
    servers: list[metrics.MetricsServer] = []

    def start(worker: WorkerThread) -> metrics.MetricsServer:
        server = metrics.serve(metrics.worker_registry(worker.worker), "127.0.0.1", 0)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def test_a_scrape_shows_the_jobs_the_worker_ran(
    app: pgqueue.App,
    start_worker: StartWorker,
    serve: Callable[[WorkerThread], metrics.MetricsServer],
) -> None:
    @app.task(queue="mail")
    def send() -> None:
        pass

    @app.task(queue="mail", max_attempts=2, autoretry_for=(Flaky,), retry_backoff=False)
    def bounce() -> None:
        raise Flaky("mailbox full")

    worker = start_worker(app, name="metrics-worker")
    server = serve(worker)
    before = scrape(server.port)
    # Known tasks are served at 0 before they run, so their first failure shows in rate().
    assert (
        value(
            before, "pgqueue_jobs_finished_total", queue="mail", task=bounce.name, outcome="failed"
        )
        == 0
    )
    assert value(before, "pgqueue_connection_losses_total", connection="shared") == 0

    for _ in range(4):
        send.delay()
    failing = bounce.delay()
    with pytest.raises(pgqueue.JobFailed):
        failing.wait(timeout=15)

    def finished() -> Samples | None:
        samples = scrape(server.port)
        done = value(
            samples,
            "pgqueue_jobs_finished_total",
            queue="mail",
            task=send.name,
            outcome="succeeded",
        )
        return samples if done == 4 else None

    samples = wait_until(finished, what="4 successes on /metrics")
    assert (
        value(
            samples,
            "pgqueue_jobs_finished_total",
            queue="mail",
            task=bounce.name,
            outcome="retried",
        )
        == 1
    )
    assert (
        value(
            samples, "pgqueue_jobs_finished_total", queue="mail", task=bounce.name, outcome="failed"
        )
        == 1
    )
    assert value(samples, "pgqueue_retries_scheduled_total", queue="mail", task=bounce.name) == 1
    assert (
        value(samples, "pgqueue_attempt_duration_seconds_count", queue="mail", task=send.name) == 4
    )
    assert (
        value(
            samples,
            "pgqueue_attempt_duration_seconds_bucket",
            queue="mail",
            task=send.name,
            le="+Inf",
        )
        == 4
    )
    # The buckets are pgqueue's rollup bounds, cumulative.
    les = sorted(
        float(dict(labels)["le"])
        for (name, labels) in samples
        if name == "pgqueue_pickup_wait_seconds_bucket"
    )
    assert les == [*rollup.BOUNDS, float("inf")]
    assert value(samples, "pgqueue_pickup_wait_seconds_count", queue="mail") == 6
    assert value(samples, "pgqueue_pickup_wait_seconds_bucket", queue="mail", le="60.0") == 6
    assert value(samples, "pgqueue_jobs_running", queue="mail") == 0
    claims = value(samples, "pgqueue_claims_total")
    assert claims is not None and claims >= 1
    assert value(samples, "pgqueue_claim_batch_size_count") == claims
    assert value(samples, "pgqueue_claim_batch_size_sum") == 6
    assert value(samples, "pgqueue_rescued_jobs_total") == 0
    assert (
        value(
            samples,
            "pgqueue_worker_info",
            name="metrics-worker",
            hostname=socket.gethostname(),
            version=pgqueue.__version__,
            pool="thread",
        )
        == 1
    )
    assert any(name == "process_resident_memory_bytes" for name, _ in samples)


def test_two_workers_in_one_process_serve_their_own_numbers(
    app: pgqueue.App,
    start_worker: StartWorker,
    serve: Callable[[WorkerThread], metrics.MetricsServer],
) -> None:
    @app.task(queue="one")
    def first() -> None: ...

    @app.task(queue="two")
    def second() -> None: ...

    servers = {
        queue: serve(start_worker(app, queues=(queue,), name=f"w-{queue}"))
        for queue in ("one", "two")
    }
    first.delay().wait(timeout=15)
    second.delay().wait(timeout=15)
    second.delay().wait(timeout=15)
    for queue, task, count in (("one", first, 1), ("two", second, 2)):
        samples = scrape(servers[queue].port)
        assert (
            value(
                samples,
                "pgqueue_jobs_finished_total",
                queue=queue,
                task=task.name,
                outcome="succeeded",
            )
            == count
        )
        assert not any(dict(labels).get("queue") not in (None, queue) for _, labels in samples), (
            f"worker of {queue} shows another queue"
        )


def test_a_taken_port_is_refused_with_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigurationError, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            metrics.serve(CollectorRegistry(), "127.0.0.1", port)
