"""pgqueue: a durable task queue for Python whose only moving part is PostgreSQL.

The public API, and nothing else.
"""

from pgqueue import signals
from pgqueue._version import __version__
from pgqueue.app import App
from pgqueue.canvas import Chain, Chord, Group, Signature, WorkflowError, chain, chord, group
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
    WorkflowNotFound,
)
from pgqueue.job import Job, JobStatus
from pgqueue.shared import SharedTask, current_app, shared_task
from pgqueue.tasks import Task
from pgqueue.workflows import Workflow, WorkflowStatus

__all__ = [
    "App",
    "Cancel",
    "Chain",
    "Chord",
    "ConfigurationError",
    "DatabaseUnavailable",
    "Group",
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
    "Signature",
    "Task",
    "UnknownTask",
    "Workflow",
    "WorkflowError",
    "WorkflowNotFound",
    "WorkflowStatus",
    "__version__",
    "chain",
    "chord",
    "current_app",
    "current_job",
    "group",
    "shared_task",
    "signals",
]
