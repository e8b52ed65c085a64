"""What was enqueued: the queued jobs of a test's database, and assertions over them that say,
when they fail, what was enqueued instead."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg.rows import dict_row

from pgqueue import queries
from pgqueue.enqueue import translate_error
from pgqueue.job import Job
from pgqueue.shared import SharedTask
from pgqueue.tasks import Task

if TYPE_CHECKING:
    from pgqueue.app import App

_QUEUED_JOBS = f"SELECT {queries.JOB_COLUMNS} FROM pgqueue_jobs WHERE status = 'queued' ORDER BY id"

# A countdown is stored as run_at - created_at, both taken from one now(): equal to the
# microsecond, but a float of seconds is compared with this slack.
COUNTDOWN_TOLERANCE = 0.001


class _Any:
    def __repr__(self) -> str:
        return "ANY"


# "Whatever it is": the default of every criterion of assert_enqueued.
ANY: Any = _Any()


def _task_name(task: Task[Any, Any] | SharedTask[Any, Any] | str) -> str:
    return task if isinstance(task, str) else task.name


def enqueued(
    app: App,
    task: Task[Any, Any] | SharedTask[Any, Any] | str | None = None,
    queue: str | None = None,
) -> list[Job]:
    """The jobs waiting to run (status queued), oldest first; only those of `task` (a Task or
    its name) and of `queue` when given. Jobs written in a transaction that has not committed
    are not there yet, as for a worker."""
    conn = app._shared_connection()
    try:
        with conn.cursor(row_factory=dict_row) as cur:
            rows = cur.execute(_QUEUED_JOBS).fetchall()
    except psycopg.Error as exc:
        raise translate_error(exc, conn, owned=True) from exc
    jobs = [Job(app, row) for row in rows]
    if task is not None:
        jobs = [job for job in jobs if job.task_name == _task_name(task)]
    if queue is not None:
        jobs = [job for job in jobs if job.queue == queue]
    return jobs


def _countdown(job: Job) -> float:
    if job.run_at is None or job.created_at is None:
        return 0.0
    return (job.run_at - job.created_at).total_seconds()


def _describe(job: Job) -> str:
    text = f"#{job.id} {job.task_name}(args={job.args!r}, kwargs={job.kwargs!r}) queue={job.queue}"
    if job.priority:
        text += f" priority={job.priority}"
    countdown = _countdown(job)
    if countdown:
        text += f" countdown={countdown:g}"
    return text


def _matches(
    job: Job,
    args: Sequence[Any] | Any,
    kwargs: Mapping[str, Any] | Any,
    queue: str | Any,
    priority: int | Any,
    countdown: float | timedelta | Any,
) -> bool:
    if args is not ANY and job.args != list(args):  # stored as JSON: a tuple comes back a list
        return False
    if kwargs is not ANY and job.kwargs != dict(kwargs):
        return False
    if queue is not ANY and job.queue != queue:
        return False
    if priority is not ANY and job.priority != priority:
        return False
    if countdown is not ANY:
        seconds = countdown.total_seconds() if isinstance(countdown, timedelta) else countdown
        if abs(_countdown(job) - float(seconds)) > COUNTDOWN_TOLERANCE:
            return False
    return True


def assert_enqueued(
    task: Task[Any, Any] | SharedTask[Any, Any],
    args: Sequence[Any] | Any = ANY,
    kwargs: Mapping[str, Any] | Any = ANY,
    *,
    queue: str | Any = ANY,
    priority: int | Any = ANY,
    countdown: float | timedelta | Any = ANY,
    count: int | None = None,
) -> list[Job]:
    """Assert that `task` has queued jobs matching every criterion given; return them.

    `args`/`kwargs` compare with the stored (JSON) arguments, `countdown` (seconds) with the
    delay asked at enqueue; `count`: exactly that many match (default: at least one). The
    AssertionError lists what was enqueued.

    >>> send_welcome.apply_async(args=(42,), countdown=60)
    >>> assert_enqueued(send_welcome, args=[42], countdown=60)
    """
    queued = enqueued(task.app)
    found = [
        job
        for job in queued
        if job.task_name == task.name and _matches(job, args, kwargs, queue, priority, countdown)
    ]
    if (count is None and found) or len(found) == count:
        return found
    wanted = ", ".join(
        f"{name}={value!r}"
        for name, value in (
            ("args", args),
            ("kwargs", kwargs),
            ("queue", queue),
            ("priority", priority),
            ("countdown", countdown),
        )
        if value is not ANY
    )
    expected = "a job" if count is None else f"{count} job(s)"
    listing = "\n".join(f"  {_describe(job)}" for job in queued) or "  (none)"
    raise AssertionError(
        f"expected {expected} of {task.name}{f' with {wanted}' if wanted else ''}, "
        f"found {len(found)}; queued jobs ({len(queued)}):\n{listing}"
    )


def assert_not_enqueued(task: Task[Any, Any] | SharedTask[Any, Any]) -> None:
    """Assert that `task` has no queued job; the AssertionError lists those it has."""
    found = enqueued(task.app, task)
    if found:
        listing = "\n".join(f"  {_describe(job)}" for job in found)
        raise AssertionError(f"expected no job of {task.name}, found {len(found)}:\n{listing}")
