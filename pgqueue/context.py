"""The running job's context, readable from inside a task with `pgqueue.current_job()`."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass


@dataclass(frozen=True)
class JobContext:
    """What a task may want to know about the attempt it is running in."""

    id: int
    task_name: str
    queue: str
    attempt: int
    max_attempts: int


_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar(
    "pgqueue_current_job", default=None
)


def current_job() -> JobContext | None:
    """The job being run by this thread or coroutine, or None outside a worker.

    >>> @app.task
    ... def report():
    ...     print("attempt", pgqueue.current_job().attempt)
    """
    return _current.get()
