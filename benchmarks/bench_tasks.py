"""The tasks the benchmark's worker processes run (DSN from PGQUEUE_DSN)."""

from __future__ import annotations

import time

import pgqueue

app = pgqueue.App()


@app.task(queue="bench")
def noop() -> None:
    """Does nothing: the benchmark measures the queue, not the task."""


@app.task(queue="bench")
async def anoop() -> None:
    """The async twin of `noop`."""


@app.task(queue="bench")
def burn(n: int) -> int:
    """CPU-bound: pure Python arithmetic that holds the GIL, as real CPU-heavy tasks do."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


@app.task(queue="bench")
async def probe(sent: float) -> float:
    """Pickup latency on the client's clock, measured as the peers' probes measure it: from
    just before the enqueue to the task's start."""
    return time.time() - sent


@app.task(queue="bench")
async def count(results: list[object]) -> int:
    """A chord's callback: how many results its members gave it."""
    return len(results)
