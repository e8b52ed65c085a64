"""The running job's context, readable from inside a task with `pgqueue.current_job()`."""

from __future__ import annotations

import contextvars
import threading
from typing import TYPE_CHECKING, Any

from pgqueue.errors import Cancel, ConfigurationError

if TYPE_CHECKING:
    from pgqueue.outcome import ClaimedJob


class CancelFlag:
    """Set when the job's cancellation is requested: a `threading.Event` for the task's
    purposes (`is_set()`, `wait(timeout)`), whose Event is only made when some code waits on
    it, as few jobs do; a worker makes one flag per job."""

    __slots__ = ("_event", "_set")
    _making_event = threading.Lock()

    def __init__(self) -> None:
        self._set = False
        self._event: threading.Event | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        event = self._event
        if event is not None:
            event.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until set, or for `timeout` seconds; True if set (as `Event.wait`)."""
        event = self._event
        if event is None:
            with CancelFlag._making_event:
                if self._event is None:
                    self._event = threading.Event()
                event = self._event
            # A set() that ran before the Event existed did not reach it.
            if self._set:
                event.set()
        return event.wait(timeout)


class JobContext:
    """What a task may want to know about the attempt it is running in (read-only)."""

    __slots__ = ("_connection", "_job", "cancel_event")

    def __init__(
        self,
        job: ClaimedJob,
        cancel_event: CancelFlag | None = None,
        connection: Any = None,
    ) -> None:
        self._job = job
        self.cancel_event = cancel_event if cancel_event is not None else CancelFlag()
        # For tasks declared transactional=True: a psycopg connection (AsyncConnection for
        # async tasks) in an open transaction, which also commits the job's completion.
        self._connection = connection

    @property
    def id(self) -> int:
        return self._job.id

    @property
    def task_name(self) -> str:
        return self._job.task_name

    @property
    def queue(self) -> str:
        return self._job.queue

    @property
    def attempt(self) -> int:
        """This attempt's number, from 1."""
        return self._job.attempt

    @property
    def max_attempts(self) -> int:
        return self._job.max_attempts

    @property
    def headers(self) -> dict[str, Any]:
        """What the job carries apart from its arguments, set at enqueue
        (`apply_async(headers=...)`, an enqueue hook such as the OpenTelemetry integration's
        trace context); empty when it has none. A copy: changing it changes nothing stored."""
        headers = self._job.headers
        return dict(headers) if headers else {}

    # Celery's names for the same facts, for `@app.task(bind=True)` tasks' `self.request`.

    @property
    def retries(self) -> int:
        """Attempts made before this one (`attempt - 1`)."""
        return self._job.attempt - 1

    @property
    def task(self) -> str:
        """The task's name (as `task_name`)."""
        return self._job.task_name

    @property
    def args(self) -> list[Any]:
        return self._job.args

    @property
    def kwargs(self) -> dict[str, Any]:
        return self._job.kwargs

    @property
    def priority(self) -> int:
        return self._job.priority

    def __repr__(self) -> str:
        return (
            f"JobContext(id={self.id}, task_name={self.task_name!r}, queue={self.queue!r}, "
            f"attempt={self.attempt}, max_attempts={self.max_attempts})"
        )

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
