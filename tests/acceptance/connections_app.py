"""The app of tests/acceptance/test_connections.py: tasks that open every kind of connection a
task can (enqueues from a thread and from the event loop, a transactional task's, progress),
and a schedule, so that the scheduler runs too."""

from __future__ import annotations

import pgqueue

app = pgqueue.App()  # the DSN comes from PGQUEUE_DSN


@app.task
def leaf() -> None: ...


@app.task
def fan_out(n: int) -> None:
    for _ in range(n):
        leaf.delay()


@app.task
async def afan_out(n: int) -> None:
    for _ in range(n):
        await leaf.adelay()


@app.task(transactional=True)
def in_transaction() -> int:
    job = pgqueue.current_job()
    assert job is not None and job.connection is not None
    row = job.connection.execute("SELECT 1").fetchone()
    assert row is not None
    return int(row[0])


@app.task
def with_progress(steps: int) -> None:
    job = pgqueue.current_job()
    assert job is not None
    for step in range(steps):
        job.set_progress({"step": step})


@app.periodic(every=3600)
@app.task
def hourly() -> None: ...
