"""The app that process-pool tests run: its child processes import it by this path."""

from __future__ import annotations

import os
import time

import pgqueue

app = pgqueue.App()  # the pool passes the worker's DSN to each child


def _record(what: str) -> None:
    job = pgqueue.current_job()
    assert job is not None
    with app.connect(autocommit=True) as conn:
        conn.execute(
            "INSERT INTO pool_events (job_id, attempt, pid, what) VALUES (%s, %s, %s, %s)",
            (job.id, job.attempt, os.getpid(), what),
        )


@app.task
def whoami() -> int:
    return os.getpid()


@app.task
def burn(n: int) -> int:
    """CPU-bound: both cores stay busy with two of these in two processes."""
    _record("started")
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


@app.task(timeout=0.5, max_attempts=1)
def sleepy() -> None:
    _record("started")
    time.sleep(60)


@app.task(max_attempts=2, retry_backoff=False)
def crash() -> None:
    _record("started")
    os._exit(3)


@app.task
def wait_for_cancel() -> None:
    _record("started")
    time.sleep(60)


@app.task(transactional=True)
def charge(order_id: int) -> int:
    job = pgqueue.current_job()
    assert job is not None
    job.connection.execute(
        "INSERT INTO pool_events (job_id, attempt, pid, what) VALUES (%s, %s, %s, 'charged')",
        (job.id, job.attempt, os.getpid()),
    )
    return order_id


@app.task(bind=True, max_attempts=3)
def bound_retries(self: pgqueue.Task[..., list[int]]) -> list[int]:
    """Retries itself twice: a bound task's request and retry in a pool process."""
    if self.request.retries < 2:
        self.retry(countdown=0)
    return [self.request.id, self.request.retries, os.getpid()]


def _go(job_id: int) -> bool:
    with app.connect(autocommit=True) as conn:
        row = conn.execute(
            "SELECT 1 FROM pool_events WHERE job_id = %s AND what = 'go'", (job_id,)
        ).fetchone()
    return row is not None


@app.task(bind=True)
def publish_progress(self: pgqueue.Task[..., int], calls: int) -> int:
    """Publishes a stage, waits until the test says go, then `calls` counts in a tight loop
    (through `self.request`, as a bound task may)."""
    self.request.set_progress({"stage": "waiting"})
    deadline = time.monotonic() + 60
    while not _go(self.request.id) and time.monotonic() < deadline:
        time.sleep(0.01)  # the task's own work, looking for the test's signal between steps
    for i in range(calls):
        self.request.set_progress({"stage": "counting", "done": i + 1})
    return os.getpid()
