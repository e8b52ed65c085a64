"""The tasks of the limits benchmark (benchmarks/limits.py); DSN from PGQUEUE_DSN."""

from __future__ import annotations

import pgqueue

app = pgqueue.App()

QUEUE = "mixed"
RATE = 50  # jobs a second, across every worker


@app.task(queue=QUEUE, rate_limit=f"{RATE}/s")
def paced() -> None:
    """A rate-limited task with nothing to do: the benchmark measures the limit."""


@app.task(queue=QUEUE)
def plain() -> None:
    """An unlimited task of the same queue: it must not wait behind `paced`'s backlog."""
