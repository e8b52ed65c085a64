"""pgqueue: a durable task queue for Python whose only moving part is PostgreSQL.

The public API, and nothing else.
"""

from pgqueue import signals
from pgqueue._version import __version__
from pgqueue.app import App
from pgqueue.context import JobContext, current_job
from pgqueue.errors import (
    Cancel,
    ConfigurationError,
    DatabaseUnavailable,
    JobCancelled,
    JobFailed,
    JobNotFound,
    MaxRetriesExceeded,
    PgQueueError,
    ProgressTooLarge,
    Retry,
    SchemaNotMigrated,
    UnknownTask,
)
from pgqueue.job import Job, JobStatus
from pgqueue.shared import SharedTask, current_app, shared_task
from pgqueue.tasks import Task

__all__ = [
    "App",
    "Cancel",
    "ConfigurationError",
    "DatabaseUnavailable",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobFailed",
    "JobNotFound",
    "JobStatus",
    "MaxRetriesExceeded",
    "PgQueueError",
    "ProgressTooLarge",
    "Retry",
    "SchemaNotMigrated",
    "SharedTask",
    "Task",
    "UnknownTask",
    "__version__",
    "current_app",
    "current_job",
    "shared_task",
    "signals",
]
