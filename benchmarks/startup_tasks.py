"""The app `benchmarks/startup.py` starts a worker on: one task that records when it ran."""

from __future__ import annotations

from peer_tasks import record_latency

from pgqueue import App

app = App()


@app.task(queue="startup")
def probe(sent: float) -> None:
    """Records the seconds since `sent`, as PgQueuer's probe does (peer_tasks.record_latency)."""
    record_latency(sent)
