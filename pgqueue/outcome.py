"""What happened to one attempt, as values: the claimed job and its Outcome.

`execute.py` makes Outcomes and never raises; `complete.py` (and, for transactional tasks,
`transactional.py`) writes them. A leaf module, so every step can share these types.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal


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
    # Seconds the job was due before it was claimed (database clock): its pickup wait.
    wait: float = 0.0
    # What the job carries apart from its arguments (a JSON object), None when nothing.
    headers: dict[str, Any] | None = None


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


# What an error may store: enough to diagnose, never so much that one job's error is a burden
# on the table, the log and every reader. A longer message keeps its start; a longer traceback
# its start and its end (the last frames say where it was raised); each says what was cut.
MAX_MESSAGE = 4000
MAX_TRACEBACK = 50_000


def storable_text(text: str, limit: int, keep: Literal["start", "both"] = "start") -> str:
    """`text` as an error may store it: at most about `limit` characters, and always
    storable (a lone surrogate or a NUL, which PostgreSQL refuses, is written escaped)."""
    if len(text) > limit:
        cut = f"... ({len(text) - limit} characters cut) ..."
        if keep == "start":
            text = text[:limit] + cut
        else:
            text = text[: limit // 2] + cut + text[-limit // 2 :]
    if not text.isascii():
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\x00")


def _type_name(exc_type: type[BaseException]) -> str:
    try:
        module = exc_type.__module__
        qualname = exc_type.__qualname__
        name = qualname if module in ("builtins", "__main__") else f"{module}.{qualname}"
        return storable_text(str(name), 200)
    except Exception:  # a class with a strange __module__ still has a plain __name__
        return storable_text(exc_type.__name__, 200)


def error_info(exc: BaseException, *, with_traceback: bool = True) -> dict[str, Any]:
    """What is stored in the job's `error` column: type, message, traceback.

    Never raises, and what it returns can always be stored: bounded in length, with lone
    surrogates and NUL characters escaped (an exception's text is whatever the task put in it).
    """
    name = _type_name(type(exc))
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not lose the outcome
        message = f"<{name}: str() failed>"
    trace = None
    if with_traceback:
        try:
            trace = "".join(traceback.format_exception(exc))
        except Exception as failure:  # the traceback is help, not the outcome
            trace = f"<the traceback could not be formatted: {type(failure).__name__}>"
    return {
        "type": name,
        "message": storable_text(message, MAX_MESSAGE),
        "traceback": storable_text(trace, MAX_TRACEBACK, keep="both") if trace else None,
    }


def simple_error(type_name: str, message: str) -> dict[str, Any]:
    return {"type": type_name, "message": message, "traceback": None}
