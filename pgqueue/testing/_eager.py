"""Eager mode: `delay()` runs the task at once, in the caller's stack, and never touches the
database. For the rare test that wants it; `drain()` is the faithful way (see docs/testing.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from pgqueue import _json
from pgqueue.context import JobContext, _current
from pgqueue.enqueue import JobRequest
from pgqueue.errors import ConfigurationError
from pgqueue.job import Job, JobStatus
from pgqueue.outcome import ClaimedJob, error_info
from pgqueue.tasks import Task

if TYPE_CHECKING:
    from pgqueue.app import App

# Eager jobs have no row: negative ids, which no real job has, tell them apart.
_ids = itertools.count(-1, -1)


class EagerJob(Job):
    """The handle `delay()` returns in eager mode: the job has run already; there is no row."""

    def refresh(self) -> Job:
        return self

    async def arefresh(self) -> Job:
        return self

    def wait(self, timeout: float | None = None) -> Any:
        return self._outcome()

    async def wait_async(self, timeout: float | None = None) -> Any:
        return self._outcome()

    def cancel(self, reason: str = "cancelled on request") -> bool:
        return False

    def wait_progress(self, timeout: float | None = None) -> Any:
        return self.progress

    async def wait_progress_async(self, timeout: float | None = None) -> Any:
        return self.progress

    def progress_updates(self, timeout: float | None = None) -> Iterator[Any]:
        if self.progress is not None:  # the job ran already: its last progress, if any
            yield self.progress

    async def aprogress(self, timeout: float | None = None) -> AsyncIterator[Any]:
        if self.progress is not None:
            yield self.progress

    async def acancel(self, reason: str = "cancelled on request") -> bool:
        return False


class _EagerRunner:
    def __init__(self, app: App, propagate: bool) -> None:
        self.app = app
        self.propagate = propagate

    def __call__(self, task: Task[Any, Any], request: JobRequest, from_async: bool) -> Any:
        if task.transactional:
            raise ConfigurationError(
                f"eager mode cannot run {task.name}: a transactional task needs its job's "
                "transaction; test it with pgqueue.testing.drain()"
            )
        # Through JSON as for a real job: what cannot be stored fails here too.
        job = ClaimedJob(
            next(_ids),
            request.queue,
            task.name,
            _json.loads(request.args_json),
            _json.loads(request.kwargs_json),
            request.priority,
            1,
            request.max_attempts,
            headers=_json.loads(request.headers_json) if request.headers_json else None,
        )
        if from_async:
            return self._arun(task, job)
        context = JobContext(job)
        token = _current.set(context)
        try:
            value = task.run(*job.args, **job.kwargs)
            if task.is_async:
                value = asyncio.run(value)  # from sync code; async code calls adelay()
        except Exception as exc:
            return self._failed(job, exc, context.progress)
        finally:
            _current.reset(token)
        return self._succeeded(job, value, context.progress)

    async def _arun(self, task: Task[Any, Any], job: ClaimedJob) -> Job:
        context = JobContext(job)
        token = _current.set(context)
        try:
            value = task.run(*job.args, **job.kwargs)
            if task.is_async:
                value = await value
        except Exception as exc:
            return self._failed(job, exc, context.progress)
        finally:
            _current.reset(token)
        return self._succeeded(job, value, context.progress)

    def _row(self, job: ClaimedJob, status: JobStatus, **more: Any) -> dict[str, Any]:
        return {
            "id": job.id,
            "task_name": job.task_name,
            "queue": job.queue,
            "status": status.value,
            "priority": job.priority,
            "attempts": 1,
            "max_attempts": job.max_attempts,
            "args": job.args,
            "kwargs": job.kwargs,
            "headers": job.headers,
            **more,
        }

    def _succeeded(self, job: ClaimedJob, value: Any, progress: Any) -> Job:
        result = _json.loads(_json.dumps(value, "the task's return value", "result"))
        row = self._row(job, JobStatus.SUCCEEDED, result=result, progress=progress)
        return EagerJob(self.app, row)

    def _failed(self, job: ClaimedJob, exc: Exception, progress: Any) -> Job:
        if self.propagate:
            raise exc
        row = self._row(job, JobStatus.FAILED, error=error_info(exc), progress=progress)
        return EagerJob(self.app, row)


@contextlib.contextmanager
def eager(app: App, *, propagate: bool = True) -> Iterator[None]:
    """Within the block, `delay()`/`apply_async()` (and their async twins) of `app`'s tasks run
    the task at once, here, and return a finished job; nothing is written to the database.

    Arguments and the result still go through JSON, and `current_job()` works; but countdown,
    eta, priority, queues, retries and the caller's transaction are ignored, and a job
    enqueued by a task runs inside that task's call. `propagate=True` (default): the task's
    exception is raised from `delay()`; else the job comes back FAILED with its error.

    >>> with pgqueue.testing.eager(app):
    ...     assert add.delay(2, 3).wait() == 5
    """
    previous = app._eager
    app._eager = _EagerRunner(app, propagate)
    try:
        yield
    finally:
        app._eager = previous
