"""Celery's side of the peer benchmark: the app its worker CLI loads
(`celery -A peer_tasks.celery_app worker`), with Redis as the broker and no result backend.

Environment: PEER_REDIS_URL (the broker, a dedicated Redis db that the benchmark flushes),
PEER_PRESET ("fastest" or "default"), PEER_SAMPLES (see peer_tasks.record_latency).
The pool, concurrency and prefetch multiplier are given on the worker's command line.
"""

from __future__ import annotations

import os
import time

from celery import Celery

from . import record_latency, record_span

app = Celery("peer_tasks", broker=os.environ.get("PEER_REDIS_URL", "redis://127.0.0.1:6379/15"))
app.conf.update(
    task_default_queue="peers",
    # No result backend, and say so per task: Celery's task guide ("ignore results you
    # don't want"); a no-op's result is nothing to store.
    result_backend=None,
    task_ignore_result=True,
    # Acknowledge on receipt (the default): acks_late costs a round trip after each task.
    task_acks_late=False,
    broker_connection_retry_on_startup=True,
    # Celery's optimizing guide, "lots of short tasks": disable rate limits.
    worker_disable_rate_limits=os.environ.get("PEER_PRESET", "fastest") == "fastest",
)


@app.task(name="noop")
def noop() -> None:
    """Does nothing but note when it ran: Celery keeps no record of start and finish times
    without a result backend and events, so the task writes one line (a local write(2))."""
    record_span(time.time())


@app.task(name="probe")
def probe(sent: float) -> None:
    """Records its pickup latency; `sent` is the producer's send time."""
    record_latency(sent)
