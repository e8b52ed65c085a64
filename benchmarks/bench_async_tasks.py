"""An app of async tasks only, as many asyncio services have: `pgqueue worker` picks its
default concurrency from the app's tasks (pgqueue/config.py), and this is the app of the
async side of `make bench-defaults` (DSN from PGQUEUE_DSN)."""

from __future__ import annotations

import pgqueue

app = pgqueue.App()


@app.task(queue="bench")
async def anoop() -> None:
    """Does nothing: the benchmark measures the queue, not the task."""
