"""The running job's context, readable from inside a task with `pgqueue.current_job()`."""

from __future__ import annotations

import contextvars
import threading
from typing import TYPE_CHECKING, Any

from pgqueue import _json
from pgqueue.errors import Cancel, ConfigurationError
from pgqueue.progress import encode_progress

if TYPE_CHECKING:
    from pgqueue.outcome import ClaimedJob
    from pgqueue.progress import ProgressSink


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

    __slots__ = ("_connection", "_job", "_progress_json", "_progress_sink", "cancel_event")

    def __init__(
        self,
        job: ClaimedJob,
        cancel_event: CancelFlag | None = None,
        connection: Any = None,
        progress_sink: ProgressSink | None = None,
    ) -> None:
        self._job = job
        # Where published progress goes (the worker's writer); None: kept here only (eager).
        self._progress_sink = progress_sink
        self._progress_json: str | None = None
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

    def set_progress(self, value: Any) -> None:
        """Publish how far the job has got, for whoever follows it (`job.progress`,
        `job.wait_progress()`, `pgqueue jobs show`): any small JSON value, such as
        `{"done": 40, "total": 100}`. Call it as often as you like: the worker writes the
        latest value at most every quarter of a second, and always before the job's outcome.

        Raises TypeError if the value is not JSON (saying which part), `pgqueue.ProgressTooLarge`
        (a ValueError) if its JSON is over 8 KiB (`pgqueue.progress.MAX_PROGRESS_BYTES`);
        nothing is published then.

        >>> @app.task
        ... def resize(paths: list[str]) -> None:
        ...     for done, path in enumerate(paths, 1):
        ...         make_thumbnail(path)
        ...         pgqueue.current_job().set_progress({"done": done, "total": len(paths)})
        """
        text = encode_progress(value)
        self._progress_json = text
        sink = self._progress_sink
        if sink is not None:
            sink.publish(self._job.id, self._job.lease, text)

    @property
    def progress(self) -> Any:
        """The progress this attempt last published (through JSON), None before any."""
        text = self._progress_json
        return None if text is None else _json.loads(text)

    def _unwritten_progress(self) -> tuple[int, str] | None:
        """The latest progress not written yet, as (lease, JSON), and no longer kept for the
        worker to write: for a transactional task to write it in its own transaction."""
        sink = self._progress_sink
        return None if sink is None else sink.take(self._job.id)

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
