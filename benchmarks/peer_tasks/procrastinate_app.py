"""procrastinate's side of the peer benchmark: the app its worker CLI loads
(`procrastinate --app peer_tasks.procrastinate_app.app worker`).

Environment: PEER_DSN (libpq conninfo of the run's database), PEER_POOL_SIZE (the connection
pool's size; unset leaves psycopg_pool's default), PEER_SAMPLES (see
peer_tasks.record_latency). The producer imports this same app and swaps its connector for
one to the run's database (`App.replace_connector`).
"""

from __future__ import annotations

import os
from typing import Any

import procrastinate

from . import record_latency


def _pool_options() -> dict[str, Any]:
    """procrastinate's docs: with short jobs the pool should hold as many connections as the
    worker's concurrency (the LISTEN connection is outside the pool)."""
    size = os.environ.get("PEER_POOL_SIZE")
    return {"min_size": int(size), "max_size": int(size)} if size else {}


app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(
        conninfo=os.environ.get("PEER_DSN", ""), **_pool_options()
    )
)


@app.task(queue="peers", name="noop")
async def noop() -> None:
    """Does nothing: the drain measures the queue, not the task. Async, because procrastinate
    runs sync tasks in a thread (asgiref's sync_to_async) and async ones natively."""


@app.task(queue="peers", name="probe")
async def probe(sent: float) -> None:
    """Records its pickup latency; `sent` is the producer's send time."""
    record_latency(sent)
