"""What happened to one attempt, as values: the claimed job and its Outcome.

`execute.py` makes Outcomes and never raises; `complete.py` (and, for transactional tasks,
`transactional.py`) writes them. A leaf module, so every step can share these types.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class ClaimedJob:
    """A job this worker holds: `attempt` counts its runs (from 1), `lease` is the claim's
    fencing token, which every write on behalf of this claim must present (0: none, matches
    nothing).

    This and the outcomes below are read-only by convention; they are not frozen, because a
    worker makes one of each per job and frozen dataclasses cost five times as much to make.
    """

    id: int
    queue: str
    task_name: str
    args: list[Any]
    kwargs: dict[str, Any]
    priority: int
    attempt: int
    max_attempts: int
    lease: int = 0
    # When the job was enqueued (database clock): how long a job of an unknown task waits.
    created_at: datetime | None = None


@dataclass(slots=True)
class Succeeded:
    job: ClaimedJob
    result_json: str
    # True for transactional tasks: written and committed with the task's own writes.
    committed: bool = False
    status = "succeeded"


@dataclass(slots=True)
class Failed:
    job: ClaimedJob
    error: dict[str, Any]
    status = "failed"


@dataclass(slots=True)
class RetryLater:
    """Another attempt, after `delay` seconds (database clock) or at `eta`."""

    job: ClaimedJob
    error: dict[str, Any]
    delay: float = 0.0
    eta: datetime | None = None
    # True when the worker, not the job, cut the attempt short (shutdown): it is not counted.
    refund_attempt: bool = False
    status = "queued"


@dataclass(slots=True)
class Cancelled:
    """The job ends CANCELLED: the task raised `pgqueue.Cancel`, or was cancelled on request."""

    job: ClaimedJob
    error: dict[str, Any]
    status = "cancelled"


@dataclass(slots=True)
class LeaseLost:
    """A transactional task finished after its job was rescued from this worker: its
    transaction, with everything the task wrote, was rolled back. Nothing to write."""

    job: ClaimedJob
    status = "lost"


Outcome = Succeeded | Failed | RetryLater | Cancelled


def error_info(exc: BaseException, *, with_traceback: bool = True) -> dict[str, Any]:
    """What is stored in the job's `error` column: type, message, traceback."""
    exc_type = type(exc)
    module = exc_type.__module__
    name = (
        exc_type.__qualname__
        if module in ("builtins", "__main__")
        else (f"{module}.{exc_type.__qualname__}")
    )
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not lose the outcome
        message = f"<{name}: str() failed>"
    # PostgreSQL's jsonb cannot store NUL characters; an unwritable error would never be stored.
    return {
        "type": name,
        "message": message.replace("\x00", "\\x00"),
        "traceback": (
            "".join(traceback.format_exception(exc)).replace("\x00", "\\x00")
            if with_traceback
            else None
        ),
    }


def simple_error(type_name: str, message: str) -> dict[str, Any]:
    return {"type": type_name, "message": message, "traceback": None}
