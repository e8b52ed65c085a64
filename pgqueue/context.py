"""The running job's context, readable from inside a task with `pgqueue.current_job()`."""

from __future__ import annotations

import contextvars
import threading
from dataclasses import dataclass, field
from typing import Any

from pgqueue.errors import Cancel, ConfigurationError


@dataclass(frozen=True)
class JobContext:
    """What a task may want to know about the attempt it is running in."""

    id: int
    task_name: str
    queue: str
    attempt: int
    max_attempts: int
    cancel_event: threading.Event = field(default_factory=threading.Event, repr=False)
    # For tasks declared transactional=True: a psycopg connection (AsyncConnection for async
    # tasks) in an open transaction, which also commits the job's completion.
    _connection: Any = field(default=None, repr=False)

    @property
    def connection(self) -> Any:
        """The connection whose transaction commits this job's completion (transactional
        tasks only): write through it, and your writes and the job's SUCCEEDED commit
        together, or not at all.

        >>> @app.task(transactional=True)
        ... def charge(order_id: int) -> None:
        ...     pgqueue.current_job().connection.execute(
        ...         "UPDATE orders SET charged = true WHERE id = %s", (order_id,))
        """
        if self._connection is None:
            raise ConfigurationError(
                f"task {self.task_name} has no job connection: declare it with "
                "@app.task(transactional=True)"
            )
        return self._connection

    @property
    def cancel_requested(self) -> bool:
        """Whether `job.cancel()` was called on this running job."""
        return self.cancel_event.is_set()

    def raise_if_cancelled(self) -> None:
        """Raise `pgqueue.Cancel` if cancellation was requested: call it between steps of a
        long sync task (async tasks are cancelled at their current `await` anyway)."""
        if self.cancel_event.is_set():
            raise Cancel("cancelled on request while running")


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
