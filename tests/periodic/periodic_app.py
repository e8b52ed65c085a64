"""The app the periodic acceptance test runs in real worker processes (DSN from PGQUEUE_DSN)."""

from __future__ import annotations

import pgqueue

app = pgqueue.App()


@app.periodic(every=1, name="every-second")
@app.task
def every_second() -> int:
    job = pgqueue.current_job()
    assert job is not None
    return job.id


@app.task(name="ops.clean_up", queue="maintenance", priority=3, max_attempts=7)
def clean_up(days: int) -> int:
    return days
