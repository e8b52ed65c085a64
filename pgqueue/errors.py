"""Every exception pgqueue raises, under one root, plus the control-flow signals tasks raise.

User-facing errors say what happened and what to do next. `Retry` is not an error: a task
raises it to ask for another attempt.
"""

from __future__ import annotations

import math
from datetime import datetime


class PgQueueError(Exception):
    """The root of every exception pgqueue raises."""


class ConfigurationError(PgQueueError):
    """A setting, option or argument is invalid; the message says which and why."""


class DatabaseUnavailable(PgQueueError):
    """The database could not be reached, or the connection to it was lost mid-call.

    A failed connect wrote nothing. A connection lost while a statement ran may have lost the
    reply to a commit: the message says whether the work may have been committed. Other
    database errors (SerializationFailure, DeadlockDetected, QueryCanceled, ...) are not
    this: they keep psycopg's class.
    """


class SchemaNotMigrated(PgQueueError):
    """pgqueue's tables are missing or out of date: run `pgqueue migrate`."""


class UnknownTask(PgQueueError):
    """No task with this name is registered on the app."""


class JobNotFound(PgQueueError):
    """No job with this id exists (it may have been pruned)."""


class WorkflowNotFound(PgQueueError):
    """No workflow with this id exists."""


class JobFailed(PgQueueError):
    """The job ended FAILED or CANCELLED; carries the task's exception type, message and traceback.

    >>> try:
    ...     job.wait(timeout=10)
    ... except pgqueue.JobFailed as exc:
    ...     print(exc.exc_type, exc.exc_message)
    """

    def __init__(
        self,
        job_id: int,
        task_name: str,
        exc_type: str,
        exc_message: str,
        traceback: str | None,
        status: str = "failed",
    ) -> None:
        self.job_id = job_id
        self.task_name = task_name
        self.exc_type = exc_type
        self.exc_message = exc_message
        self.traceback = traceback
        self.status = status
        super().__init__(f"job {job_id} ({task_name}) {status}: {exc_type}: {exc_message}")


class JobCancelled(JobFailed):
    """The job ended CANCELLED: cancelled on request (type "Cancelled") or expired ("Expired")."""


class Cancel(PgQueueError):
    """Raise inside a task to end its job CANCELLED, without retries.

    `pgqueue.current_job().raise_if_cancelled()` raises it when someone called
    `job.cancel()` on the running job: the way a sync task honours a cancellation.
    """

    def __init__(self, reason: str = "cancelled on request") -> None:
        self.reason = reason
        super().__init__(reason)


class Retry(PgQueueError):
    """Raise inside a task to ask for another attempt.

    `countdown` (seconds) or `eta` (an aware datetime) says when; with neither, the task's
    backoff policy decides. When the job has no attempts left it ends FAILED instead.

    >>> raise pgqueue.Retry(countdown=30)
    """

    def __init__(
        self,
        countdown: float | None = None,
        *,
        eta: datetime | None = None,
        reason: str | None = None,
    ) -> None:
        if countdown is not None and eta is not None:
            raise ConfigurationError("Retry takes countdown or eta, not both")
        if countdown is not None and not (math.isfinite(countdown) and countdown >= 0):
            raise ConfigurationError(
                f"Retry countdown must be a finite number >= 0 seconds, got {countdown!r}"
            )
        if eta is not None and eta.tzinfo is None:
            raise ConfigurationError(
                "Retry eta must be timezone-aware, e.g. datetime.now(timezone.utc)"
            )
        self.countdown = countdown
        self.eta = eta
        self.reason = reason
        super().__init__(reason or "retry requested")


class MaxRetriesExceeded(PgQueueError):
    """Raised by `self.retry(max_retries=n)` in a bound task once n retries were made: the
    job ends FAILED with this error, whatever the task's `autoretry_for` says."""


class ProgressTooLarge(PgQueueError, ValueError):
    """Raised by `set_progress()` for a value whose JSON is over
    `pgqueue.progress.MAX_PROGRESS_BYTES`: nothing is published."""
