"""Run one claimed job and turn whatever happened into an Outcome value.

Whatever a task raises or returns becomes an Outcome; the only exception that leaves
`Executor.run` is CancelledError, because only the worker knows whether it cancelled the job
(shutdown, cancel request) or the task raised it itself (see `Worker._run_job`).

Async tasks run on the worker's event loop; sync tasks on its thread pool. Only `complete.py`
writes outcomes to the database.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable, Coroutine
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from pgqueue import _json, transactional
from pgqueue._task_threads import TaskCall, TaskThreads
from pgqueue.context import CancelFlag, JobContext, _current
from pgqueue.errors import Cancel, MaxRetriesExceeded, Retry
from pgqueue.hooks import wrap_async, wrap_sync
from pgqueue.outcome import (
    Cancelled,
    ClaimedJob,
    Failed,
    LeaseLost,
    Outcome,
    RetryLater,
    Succeeded,
    error_info,
    simple_error,
)

if TYPE_CHECKING:
    from pgqueue.app import App
    from pgqueue.process_pool import ProcessPool
    from pgqueue.progress import ProgressSink
    from pgqueue.tasks import Task


class TaskTimeout(TimeoutError):
    """An attempt ran past its task's `timeout`."""


class _RaisedInItsTask(Exception):
    """Carries a BaseException that is not an Exception (SystemExit, KeyboardInterrupt,
    GeneratorExit, CancelledError) out of the thread or asyncio Task an attempt ran in:
    asyncio lets SystemExit and KeyboardInterrupt raised in a Task out of the event loop,
    which would stop the worker, and a GeneratorExit coming out of an `await` escapes the
    `except` clauses of the coroutines it passes through."""

    def __init__(self, raised: BaseException) -> None:
        super().__init__(type(raised).__name__)
        self.raised = raised


async def _contained(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        return await coro
    except asyncio.CancelledError:
        raise  # maybe the worker's own (the timeout's Task is cancelled with the job's)
    except Exception:
        raise
    except BaseException as exc:
        raise _RaisedInItsTask(exc) from None


def _contained_sync(call: Callable[[], Any]) -> Callable[[], Any]:
    def run() -> Any:
        try:
            return call()
        except Exception:
            raise
        except BaseException as exc:  # on a thread, even a CancelledError is the task's own
            raise _RaisedInItsTask(exc) from None

    return run


def _after_failure(
    task: Task[Any, Any], job: ClaimedJob, exc: BaseException, error: dict[str, Any]
) -> Outcome:
    policy = task.retry_policy
    if policy.is_retryable(exc) and policy.can_retry(job.attempt):
        return RetryLater(job, error, delay=policy.next_delay(job.attempt))
    return Failed(job, error)


def _after_retry_request(task: Task[Any, Any], job: ClaimedJob, request: Retry) -> Outcome:
    error = error_info(request, with_traceback=False)
    error["type"] = "Retry"
    if not task.retry_policy.can_retry(job.attempt):
        asked = f"retry requested ({error['message']})" if request.reason else "retry requested"
        error["message"] = f"{asked} but attempt {job.attempt} of {job.max_attempts} was the last"
        return Failed(job, error)
    if request.eta is not None:
        return RetryLater(job, error, eta=request.eta)
    if request.countdown is not None:
        return RetryLater(job, error, delay=request.countdown)
    return RetryLater(job, error, delay=task.retry_policy.next_delay(job.attempt))


# A job whose task this worker's app does not register waits for a worker that has it: in a
# rolling deploy the new code's jobs reach old workers too. It goes back to the queue with its
# attempt given back, after a delay of half its age (so each wait is longer than the last),
# kept between the two bounds below, and ends FAILED only once it is UNKNOWN_TASK_PATIENCE
# old (measured from its creation, on the worker's clock against the database's).
UNKNOWN_TASK_PATIENCE = timedelta(hours=24)
UNKNOWN_TASK_MIN_DELAY = 5.0
UNKNOWN_TASK_MAX_DELAY = 600.0


def unknown_task(job: ClaimedJob, now: datetime | None = None) -> Failed | RetryLater:
    """What a job of a task this worker does not know comes to: back to the queue, uncounted,
    until it is UNKNOWN_TASK_PATIENCE old; then FAILED (UnknownTask)."""
    unknown = f"no task named {job.task_name!r} is registered in this worker's app"
    age = (now or datetime.now(timezone.utc)) - job.created_at if job.created_at else None
    if age is None or age >= UNKNOWN_TASK_PATIENCE:
        hours = UNKNOWN_TASK_PATIENCE.total_seconds() / 3600
        return Failed(
            job,
            simple_error(
                "UnknownTask",
                f"{unknown}, nor in that of any worker that claimed the job in the {hours:g} "
                "hours since it was enqueued; deploy the code that defines it, then retry "
                "the job",
            ),
        )
    left = (UNKNOWN_TASK_PATIENCE - age).total_seconds()
    delay = min(max(age.total_seconds() / 2, UNKNOWN_TASK_MIN_DELAY), UNKNOWN_TASK_MAX_DELAY)
    return RetryLater(
        job,
        simple_error("UnknownTask", f"{unknown}: waiting for a worker that has it"),
        delay=min(delay, left),
        refund_attempt=True,
    )


def outcome_of_exception(
    task: Task[Any, Any], job: ClaimedJob, exc: BaseException
) -> Outcome | LeaseLost:
    """What an attempt that raised `exc` comes to, per the task's policy."""
    if isinstance(exc, transactional.LeaseLostError):
        return LeaseLost(job)
    if isinstance(exc, _RaisedInItsTask):
        exc = exc.raised
    if isinstance(exc, transactional.ResultNotStorable):
        # As for any other task: the same value would come back on a retry.
        error = error_info(exc, with_traceback=False)
        error["type"] = "TypeError"
        return Failed(job, error)
    if isinstance(exc, Cancel):
        return Cancelled(job, simple_error("Cancelled", exc.reason))
    if isinstance(exc, Retry):
        return _after_retry_request(task, job, exc)
    if isinstance(exc, MaxRetriesExceeded):  # the task gave up: never retried
        return Failed(job, error_info(exc))
    if isinstance(exc, TaskTimeout):
        return _after_failure(task, job, exc, error_info(exc, with_traceback=False))
    if isinstance(exc, transactional.JobConnectionLost):
        # The database failed, not the task, and the attempt's transaction is gone: retry
        # while attempts remain, whatever autoretry_for says.
        error = error_info(exc, with_traceback=False)
        if task.retry_policy.can_retry(job.attempt):
            return RetryLater(job, error, delay=task.retry_policy.next_delay(job.attempt))
        return Failed(job, error)
    return _after_failure(task, job, exc, error_info(exc))


def outcome_of_value(task: Task[Any, Any], job: ClaimedJob, value: Any) -> Outcome:
    """What an attempt that returned `value` comes to (a transactional task returns its
    committed Succeeded)."""
    if task.transactional:
        return value  # type: ignore[no-any-return]
    try:
        return Succeeded(job, _json.dumps(value, "the task's return value", "result"))
    except Exception as exc:  # TypeError, saying what cannot be stored; never a lost outcome
        return Failed(job, error_info(exc, with_traceback=False))


def sync_call(
    task: Task[Any, Any],
    job: ClaimedJob,
    cancel_event: CancelFlag,
    pool: transactional.TransactionalConnections,
    connection: Any,
    progress: ProgressSink | None = None,
) -> Callable[[], Any]:
    """A sync task's call, in the job's context, inside its transaction when it has one and
    inside the app's attempt wrappers when it has some (the thread pool and the process
    pool's children both run this)."""
    context = contextvars.copy_context()
    job_context = JobContext(job, cancel_event, connection, progress)
    context.run(_current.set, job_context)
    fn: Callable[[], Any] = functools.partial(task.run, *job.args, **job.kwargs)
    if connection is not None:
        fn = functools.partial(transactional.run_sync, pool, connection, job, fn)
    wrappers = task.app._hooks.attempt_wrappers
    if wrappers:
        fn = wrap_sync(wrappers, job_context, fn, task)
    return functools.partial(context.run, fn)


def run_in_this_process(
    app: App,
    job: ClaimedJob,
    pool: transactional.TransactionalConnections,
    progress: ProgressSink | None = None,
) -> Outcome | LeaseLost:
    """Run a sync task here and now, blocking (a process-pool child does this); the progress
    it publishes goes to `progress`."""
    task = app.tasks.get(job.task_name)
    if task is None:
        return unknown_task(job)
    try:
        connection = pool.acquire() if task.transactional else None
        value = sync_call(task, job, CancelFlag(), pool, connection, progress)()
    except BaseException as exc:  # a task's failure is data, whatever it raised
        return outcome_of_exception(task, job, exc)
    return outcome_of_value(task, job, value)


class Executor:
    """Runs jobs for a worker: resolves the task, applies its timeout, builds the Outcome."""

    def __init__(
        self,
        app: App,
        thread_pool: TaskThreads,
        process_pool: ProcessPool | None = None,
        progress: ProgressSink | None = None,
    ) -> None:
        self.app = app
        # Where the tasks' published progress goes (a worker's writer; drain()'s).
        self.progress = progress
        self.thread_pool = thread_pool
        # With `--pool process`, sync tasks run in child processes instead of threads.
        self.process_pool = process_pool
        self.transactional = transactional.TransactionalConnections(app)
        # Threads of sync tasks that outlived their timeout: they still occupy a thread, so the
        # worker counts them against its free slots until they return.
        self.overrunning_threads: set[TaskCall] = set()
        # Called on the loop when such a thread returns and its slot is free again.
        self.on_slot_freed: Callable[[], object] | None = None

    async def run(
        self, job: ClaimedJob, cancel_event: CancelFlag | None = None
    ) -> Outcome | LeaseLost:
        """The attempt's Outcome; raises only CancelledError (see the module docstring)."""
        task = self.app.tasks.get(job.task_name)
        if task is None:
            return unknown_task(job)
        if self.process_pool is not None and not task.is_async:
            return await self.process_pool.run(task, job)
        try:
            value = await self._call(task, job, cancel_event or CancelFlag())
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # a task's failure is data, whatever it raised
            return outcome_of_exception(task, job, exc)
        return outcome_of_value(task, job, value)

    def failed_attempt(self, job: ClaimedJob, exc: BaseException) -> Outcome | LeaseLost:
        """The Outcome of an attempt that raised `exc` outside `run`'s own handling (a
        CancelledError the worker did not cause), per the task's policy."""
        task = self.app.tasks.get(job.task_name)
        if task is None:
            return unknown_task(job)
        return outcome_of_exception(task, job, exc)

    async def _call(self, task: Task[Any, Any], job: ClaimedJob, cancel_event: CancelFlag) -> Any:
        """Run the task in the job's context; a transactional task returns its committed
        Succeeded, any other its value."""
        connection: Any = None
        if task.transactional:
            connection = await (
                self.transactional.aacquire()
                if task.is_async
                else asyncio.to_thread(self.transactional.acquire)
            )
        if task.is_async:
            # The caller is the job's own asyncio task, which runs in a context of its own:
            # setting the job there reaches the coroutine and whatever it starts.
            job_context = JobContext(job, cancel_event, connection, self.progress)
            _current.set(job_context)
            call_async = functools.partial(task.run, *job.args, **job.kwargs)
            coro = (
                transactional.run_async(self.transactional, connection, job, call_async)
                if connection is not None
                else call_async()
            )
            wrappers = self.app._hooks.attempt_wrappers
            if wrappers:  # entered by the coroutine, in whichever asyncio task runs it
                coro = wrap_async(wrappers, job_context, coro, task)
            if task.timeout is None:
                return await coro
            return await self._with_timeout(task, asyncio.ensure_future(_contained(coro)))
        call = sync_call(task, job, cancel_event, self.transactional, connection, self.progress)
        handed = self.thread_pool.submit(_contained_sync(call))
        try:
            return await self._with_timeout(task, handed.future)
        except (TaskTimeout, asyncio.CancelledError):
            if not handed.finished:
                self.overrunning_threads.add(handed)
                handed.add_finished_callback(self._overrun_ended)
            raise

    def _overrun_ended(self, handed: TaskCall) -> None:
        self.overrunning_threads.discard(handed)
        if self.on_slot_freed is not None:
            self.on_slot_freed()

    @staticmethod
    async def _with_timeout(task: Task[Any, Any], awaitable: asyncio.Future[Any]) -> Any:
        if task.timeout is None:
            return await awaitable
        try:
            return await asyncio.wait_for(awaitable, task.timeout)
        except asyncio.TimeoutError:
            raise TaskTimeout(
                f"attempt ran past the task's timeout of {task.timeout:g} s"
            ) from None
