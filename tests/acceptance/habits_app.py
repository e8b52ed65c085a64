"""The app of the acceptance tests for Celery users' habits: a bound task that retries itself,
and signal receivers that write each event as a JSON line to the file named by HABITS_EVENTS
(connected only when it is set, so that importing this module elsewhere connects nothing)."""

from __future__ import annotations

import json
import os
from typing import Any

import pgqueue
from pgqueue import signals

app = pgqueue.App()  # the DSN comes from PGQUEUE_DSN


@app.task(bind=True, max_attempts=5)
def retry_twice(self: pgqueue.Task[..., int], label: str) -> int:
    if self.request.retries < 2:
        self.retry(exc=TimeoutError(f"{label} not yet"), countdown=0.2)
    return self.request.retries


@app.task
def add(a: int, b: int) -> int:
    return a + b


@app.task(max_attempts=1)
def fails() -> None:
    raise ValueError("as planned")


def _record(signal: signals.Signal, **kwargs: Any) -> None:
    entry = {"signal": signal.name, "pid": os.getpid()}
    for key in ("task_id", "status", "countdown", "result", "duration"):
        if key in kwargs:
            entry[key] = kwargs[key]
    if "job" in kwargs:
        entry["retries"] = kwargs["job"].retries
    if "error" in kwargs:
        entry["error"] = kwargs["error"]["type"]
    with open(os.environ["HABITS_EVENTS"], "a", encoding="utf-8") as events:
        events.write(json.dumps(entry) + "\n")


def _broken(**kwargs: Any) -> None:
    raise RuntimeError("a receiver with a bug")


if os.environ.get("HABITS_EVENTS"):
    for name in ("task_prerun", "task_success", "task_failure", "task_retry", "task_postrun"):
        getattr(signals, name).connect(_broken)  # first: the good receiver runs after it
        getattr(signals, name).connect(_record)
    signals.worker_ready.connect(_record)
    signals.worker_shutdown.connect(_record)
