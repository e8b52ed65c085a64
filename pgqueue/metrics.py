"""Prometheus endpoints: a worker's own metrics (`pgqueue worker --metrics-port`), read from its
`Observations` at scrape time, and the HTTP server that serves a registry from a thread.

prometheus-client comes with the `pgqueue[metrics]` extra. Only this module imports it (the
exporter takes its names from here), and only when an endpoint is asked for: without the extra,
the import is a one-line ConfigurationError. Each endpoint has a registry of its own, so that
several workers in one process (tests, embedded workers) serve their own numbers.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING

from pgqueue import rollup
from pgqueue._version import __version__
from pgqueue.errors import ConfigurationError
from pgqueue.observations import CLAIM_SIZE_BOUNDS, OUTCOME_BY_STATUS, Histogram

try:
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.process_collector import ProcessCollector
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised by a subprocess test
    raise ConfigurationError(
        "Prometheus metrics need prometheus-client: pip install 'pgqueue[metrics]'"
    ) from exc

if TYPE_CHECKING:
    from pgqueue.worker import Worker

# What `connection` of pgqueue_connection_losses_total may be; each is served from the start
# (at 0), so that the first loss shows in rate() and increase().
CONNECTIONS = ("notifier", "shared")


def _buckets(bounds: tuple[float, ...], histogram: Histogram) -> list[tuple[str, float]]:
    """Cumulative buckets as Prometheus wants them (le inclusive, as pgqueue's bounds are)."""
    cumulative = 0
    buckets: list[tuple[str, float]] = []
    for bound, count in zip(bounds, histogram.counts, strict=False):
        cumulative += count
        buckets.append((repr(float(bound)), cumulative))
    buckets.append(("+Inf", cumulative + histogram.counts[-1]))
    return buckets


class WorkerCollector(Collector):
    """A worker's metrics, read from its Observations at each scrape (nothing is kept here)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker

    def collect(self) -> Iterator[Metric]:
        worker = self.worker
        snapshot = worker.observations.snapshot()

        finished = CounterMetricFamily(
            "pgqueue_jobs_finished",
            "Attempts this worker ran to an end, by queue, task and outcome (succeeded, "
            "failed: final, retried: failed with another attempt scheduled, cancelled).",
            labels=["queue", "task", "outcome"],
        )
        known = dict(snapshot.finished)
        # The app's tasks of the queues served, at 0 until they happen: a first failure must
        # show in rate().
        for task in worker.app.tasks.values():
            if task.queue in worker.queues:
                for outcome in OUTCOME_BY_STATUS.values():
                    known.setdefault((task.queue, task.name, outcome), 0)
        for (queue, task_name, outcome), count in sorted(known.items()):
            finished.add_metric([queue, task_name, outcome], count)
        yield finished

        duration = HistogramMetricFamily(
            "pgqueue_attempt_duration_seconds",
            "How long attempts ran on this worker, by queue and task.",
            labels=["queue", "task"],
        )
        for (queue, task_name), histogram in sorted(snapshot.duration.items()):
            duration.add_metric(
                [queue, task_name], _buckets(rollup.BOUNDS, histogram), histogram.total
            )
        yield duration

        wait = HistogramMetricFamily(
            "pgqueue_pickup_wait_seconds",
            "How long jobs were due before this worker claimed them (database clock), by queue.",
            labels=["queue"],
        )
        for queue, histogram in sorted(snapshot.wait.items()):
            wait.add_metric([queue], _buckets(rollup.BOUNDS, histogram), histogram.total)
        yield wait

        running = GaugeMetricFamily(
            "pgqueue_jobs_running",
            "Attempts running on this worker now, by queue.",
            labels=["queue"],
        )
        for queue in sorted({*worker.queues, *snapshot.running}):
            running.add_metric([queue], snapshot.running.get(queue, 0))
        yield running

        yield GaugeMetricFamily(
            "pgqueue_jobs_held",
            "Jobs this worker claimed ahead of its free slots and has not started yet.",
            value=worker.held_ahead,
        )

        yield CounterMetricFamily(
            "pgqueue_claims",
            "Claim statements this worker ran (including those that found no job).",
            value=snapshot.claims,
        )
        sizes = HistogramMetricFamily("pgqueue_claim_batch_size", "Jobs taken per claim statement.")
        sizes.add_metric(
            [], _buckets(CLAIM_SIZE_BOUNDS, snapshot.claim_sizes), snapshot.claim_sizes.total
        )
        yield sizes

        yield CounterMetricFamily(
            "pgqueue_rescued_jobs",
            "Jobs this worker's maintenance took back from lost workers.",
            value=snapshot.rescued,
        )

        retries = CounterMetricFamily(
            "pgqueue_retries_scheduled",
            "Failed attempts this worker put back for another attempt, by queue and task.",
            labels=["queue", "task"],
        )
        for (queue, task_name), count in sorted(snapshot.retries.items()):
            retries.add_metric([queue, task_name], count)
        yield retries

        losses = CounterMetricFamily(
            "pgqueue_connection_losses",
            "Database connections of this worker that broke and were made again, by connection.",
            labels=["connection"],
        )
        for connection in sorted({*CONNECTIONS, *snapshot.connection_losses}):
            losses.add_metric([connection], snapshot.connection_losses.get(connection, 0))
        yield losses

        info = GaugeMetricFamily(
            "pgqueue_worker_info",
            "Always 1; the worker's name (as in pgqueue_workers), host, pgqueue version and pool.",
            labels=["name", "hostname", "version", "pool"],
        )
        presence = getattr(worker, "presence", None)
        hostname = socket.gethostname()
        if presence is not None:
            name = presence.name
        else:  # not started yet: the name it will register under
            name = worker.settings.name or f"{hostname}:{os.getpid()}"
        info.add_metric([name, hostname, __version__, worker.settings.pool], 1)
        yield info


def worker_registry(worker: Worker) -> CollectorRegistry:
    """A registry of the worker's metrics and its process's (CPU, memory, open files)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WorkerCollector(worker))
    ProcessCollector(registry=registry)
    return registry


class MetricsServer:
    """An HTTP server answering GET /metrics from a registry, on a daemon thread."""

    def __init__(self, registry: CollectorRegistry, host: str, port: int) -> None:
        try:
            self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}"
                " (is another process using the port? choose another one)"
            ) from exc
        self.host = host
        self.port: int = self._server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def serve(registry: CollectorRegistry, host: str, port: int) -> MetricsServer:
    """Serve `registry` on host:port (port 0: any free port, see `.port`); a taken port is a
    ConfigurationError with one clear line."""
    return MetricsServer(registry, host, port)


# prometheus-client's names the exporter builds on come from here, behind the import check.
__all__ = [
    "CONNECTIONS",
    "Collector",
    "CollectorRegistry",
    "CounterMetricFamily",
    "GaugeMetricFamily",
    "HistogramMetricFamily",
    "Metric",
    "MetricsServer",
    "WorkerCollector",
    "serve",
    "worker_registry",
]
