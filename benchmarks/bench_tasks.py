"""The tasks the benchmark's worker processes run (DSN from PGQUEUE_DSN)."""

from __future__ import annotations

import pgqueue

app = pgqueue.App()


@app.task(queue="bench")
def noop() -> None:
    """Does nothing: the benchmark measures the queue, not the task."""


@app.task(queue="bench")
async def anoop() -> None:
    """The async twin of `noop`."""
