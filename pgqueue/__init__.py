"""pgqueue: a durable task queue for Python whose only moving part is PostgreSQL.

The public API, and nothing else. Each name is imported from its module when first used
(PEP 562), so that `from pgqueue import App` in a worker's app module loads what an App needs
and not the workflow or canvas machinery as well: a worker's start-up is mostly imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pgqueue._version import __version__

if TYPE_CHECKING:
    from pgqueue import signals
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

# Each public name's module; "signals" is a module itself.
_MODULES = {
    "App": "pgqueue.app",
    "Cancel": "pgqueue.errors",
    "Chain": "pgqueue.canvas",
    "Chord": "pgqueue.canvas",
    "ConfigurationError": "pgqueue.errors",
    "DatabaseUnavailable": "pgqueue.errors",
    "Group": "pgqueue.canvas",
    "Job": "pgqueue.job",
    "JobCancelled": "pgqueue.errors",
    "JobContext": "pgqueue.context",
    "JobFailed": "pgqueue.errors",
    "JobNotFound": "pgqueue.errors",
    "JobStatus": "pgqueue.job",
    "MaxRetriesExceeded": "pgqueue.errors",
    "PgQueueError": "pgqueue.errors",
    "ProgressTooLarge": "pgqueue.errors",
    "Retry": "pgqueue.errors",
    "SchemaNotMigrated": "pgqueue.errors",
    "SharedTask": "pgqueue.shared",
    "Signature": "pgqueue.canvas",
    "Task": "pgqueue.tasks",
    "UnknownTask": "pgqueue.errors",
    "Workflow": "pgqueue.workflows",
    "WorkflowError": "pgqueue.canvas",
    "WorkflowNotFound": "pgqueue.errors",
    "WorkflowStatus": "pgqueue.workflows",
    "chain": "pgqueue.canvas",
    "chord": "pgqueue.canvas",
    "current_app": "pgqueue.shared",
    "current_job": "pgqueue.context",
    "group": "pgqueue.canvas",
    "shared_task": "pgqueue.shared",
}

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


def __getattr__(name: str) -> Any:
    if name == "signals":
        return importlib.import_module("pgqueue.signals")  # binds pgqueue.signals too
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module 'pgqueue' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # found once; later lookups do not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
