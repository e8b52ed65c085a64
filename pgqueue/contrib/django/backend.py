"""A backend for Django's Tasks framework (`django.tasks`) that runs on pgqueue.

>>> TASKS = {"default": {"BACKEND": "pgqueue.contrib.django.PgQueueBackend"}}

Functions decorated with Django's own `@task` are enqueued as pgqueue jobs (named by the
function's module path, in the queue of the task's `queue_name`), run by `pgqueue worker`
(`manage.py pgqueue_worker`), and their results read back from the job's row. Inside
`transaction.atomic()`, `.enqueue()` writes the job in the block's transaction.
"""

from __future__ import annotations

import inspect
import threading
import traceback
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from asgiref.sync import sync_to_async
from django.core import checks
from django.tasks import TaskContext, TaskResult, TaskResultStatus
from django.tasks.backends.base import BaseTaskBackend
from django.tasks.base import Task as DjangoTask
from django.tasks.base import TaskError
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist
from django.tasks.signals import task_enqueued, task_finished, task_started
from django.utils import timezone
from django.utils.json import normalize_json
from django.utils.module_loading import import_string

from pgqueue.config import validate_queue_name
from pgqueue.context import current_job
from pgqueue.errors import ConfigurationError, JobNotFound
from pgqueue.inspect.jobs import JobDetail, job_detail
from pgqueue.retry import DEFAULT_MAX_ATTEMPTS
from pgqueue.tasks import Task

from ._app import DjangoApp

# pgqueue's statuses as Django's: a job back in the queue for another attempt is READY again.
STATUSES = {
    "waiting": TaskResultStatus.READY,  # a workflow step whose parents have not ended
    "queued": TaskResultStatus.READY,
    "running": TaskResultStatus.RUNNING,
    "succeeded": TaskResultStatus.SUCCESSFUL,
    "failed": TaskResultStatus.FAILED,
    "cancelled": TaskResultStatus.FAILED,
}
# What a cancelled job's error names, for TaskError.exception_class.
CANCELLED_CLASS = "pgqueue.errors.JobCancelled"


class PgQueueBackend(BaseTaskBackend):
    """Django Tasks on pgqueue: deferred (`run_after`), async and prioritised tasks, results
    read from any process, and the job written in the caller's `atomic()` transaction.

    `QUEUES` lists the queue names tasks may use (default `["default"]`), and `pgqueue
    worker` serves them all unless given `--queues`; an empty list allows any name pgqueue
    accepts, and then the worker needs `--queues` to serve names other than "default".
    `OPTIONS`: `MAX_ATTEMPTS`, the runs a job gets when its worker is lost or the task raises
    `pgqueue.Retry` (default pgqueue's). Django's priorities (-100 to 100, higher first) are
    pgqueue's own, unchanged.
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        unknown = sorted(set(self.options) - {"MAX_ATTEMPTS"})
        if unknown:
            raise InvalidTask(
                f"TASKS[{alias!r}]['OPTIONS'] has unknown key(s) {', '.join(map(repr, unknown))}"
                "; the one key is 'MAX_ATTEMPTS'"
            )
        self.max_attempts = int(self.options.get("MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS))
        if self.max_attempts < 1:
            raise InvalidTask(f"TASKS[{alias!r}]['OPTIONS']['MAX_ATTEMPTS'] must be 1 or more")
        for queue in self.queues:
            _check_queue(queue)

    @property
    def app(self) -> DjangoApp:
        from . import app

        return app

    # -- validation, and the pgqueue task behind each Django task -------------------------

    def validate_task(self, task: DjangoTask) -> None:
        super().validate_task(task)
        _check_queue(task.queue_name)
        self.job_task(task)  # registered now: a worker that imported the module runs it

    def job_task(self, task: DjangoTask) -> Task[Any, Any]:
        """The pgqueue task that runs this Django task: named by its module path."""
        name = task.module_path
        existing = self.app.tasks.get(name)
        if existing is not None and getattr(existing.fn, "django_task_func", None) is task.func:
            return existing
        with _registering:
            existing = self.app.tasks.get(name)
            if existing is not None:
                if getattr(existing.fn, "django_task_func", None) is task.func:
                    return existing
                if not hasattr(existing.fn, "django_task_func"):
                    raise InvalidTask(
                        f"a pgqueue task is already named {name!r}: a Django task cannot share "
                        "its name"
                    )
                del self.app.tasks[name]  # the module was imported again (autoreload)
            register = self.app.task(name=name, max_attempts=self.max_attempts)
            registered: Task[Any, Any] = register(_runner(self, task))
            return registered

    # -- enqueue --------------------------------------------------------------------------

    def enqueue(self, task: DjangoTask, args: Sequence[Any], kwargs: dict[str, Any]) -> TaskResult:
        self.validate_task(task)
        args, kwargs = normalize_json(list(args)), normalize_json(dict(kwargs))
        run_after = task.run_after
        if run_after is not None and timezone.is_naive(run_after):
            run_after = timezone.make_aware(run_after)
        try:
            job = self.job_task(task).apply_async(
                args,
                kwargs,
                priority=task.priority,
                queue=task.queue_name,
                eta=run_after,
            )
        except ConfigurationError as exc:
            raise InvalidTask(str(exc)) from exc
        result = TaskResult(
            task=task,
            id=str(job.id),
            status=TaskResultStatus.READY,
            enqueued_at=job.created_at,
            started_at=None,
            finished_at=None,
            last_attempted_at=None,
            args=args,
            kwargs=kwargs,
            backend=self.alias,
            errors=[],
            worker_ids=[],
        )
        task_enqueued.send(type(self), task_result=result)
        return result

    # -- results --------------------------------------------------------------------------

    def get_result(self, result_id: Any) -> TaskResult:
        try:
            job_id = int(result_id)
        except (TypeError, ValueError):
            raise TaskResultDoesNotExist(f"no task result {result_id!r}") from None
        try:
            detail = job_detail(self.app._shared_connection(), job_id)
        except JobNotFound:
            raise TaskResultDoesNotExist(
                f"no task result {result_id!r} (never enqueued, or pruned since)"
            ) from None
        return self._result(detail)

    async def aget_result(self, result_id: Any) -> TaskResult:
        return await sync_to_async(self.get_result, thread_sensitive=False)(result_id)

    def _result(self, detail: JobDetail) -> TaskResult:
        try:
            task = import_string(detail.task_name)
        except ImportError:
            task = None
        if not isinstance(task, DjangoTask):
            raise TaskResultDoesNotExist(
                f"job {detail.id} is a job of {detail.task_name!r}, not of a Django task"
            )
        task = replace(
            task,
            priority=detail.priority,
            backend=self.alias,
            queue_name=detail.queue,
            run_after=None,
        )
        attempts = detail.attempt_history
        errors = [
            TaskError(
                exception_class_path=_class_path(a.error, a.outcome),
                traceback=str(a.error.get("traceback") or a.error.get("message") or ""),
            )
            for a in attempts
            if a.error
        ]
        if detail.status == "cancelled" and not errors and detail.error:
            errors.append(
                TaskError(
                    exception_class_path=CANCELLED_CLASS,
                    traceback=str(detail.error.get("message") or ""),
                )
            )
        result = TaskResult(
            task=task,
            id=str(detail.id),
            status=STATUSES[detail.status],
            enqueued_at=detail.created_at,
            started_at=attempts[0].started_at if attempts else None,
            finished_at=detail.finished_at,
            last_attempted_at=attempts[-1].started_at if attempts else None,
            args=detail.args,
            kwargs=detail.kwargs,
            backend=self.alias,
            errors=errors,
            worker_ids=[(a.worker.name or str(a.worker.id)) if a.worker else "" for a in attempts],
        )
        if detail.status == "succeeded":
            object.__setattr__(result, "_return_value", detail.result)
        return result

    # -- checks ---------------------------------------------------------------------------

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        from django.apps import apps

        messages: list[checks.CheckMessage] = []
        if not apps.is_installed("pgqueue.contrib.django"):
            messages.append(
                checks.Error(
                    f"TASKS[{self.alias!r}] uses pgqueue, whose Django app is not installed",
                    hint="add 'pgqueue.contrib.django' to INSTALLED_APPS",
                    id="pgqueue.E001",
                )
            )
        return messages


_registering = threading.Lock()


def _check_queue(queue: str) -> None:
    try:
        validate_queue_name(queue)
    except ConfigurationError as exc:
        raise InvalidTask(str(exc)) from None


def _class_path(error: dict[str, Any], outcome: str) -> str:
    name = str(error.get("type") or "Exception")
    if outcome == "cancelled" or name in ("Cancelled", "Expired"):
        return CANCELLED_CLASS
    return name if "." in name else f"builtins.{name}"


def _running_job(task: DjangoTask) -> int:
    job = current_job()
    if job is None:  # the runner called as a plain function
        raise InvalidTask(f"{task.module_path} runs in a pgqueue worker: call .enqueue()")
    return job.id


def _running_result(backend: PgQueueBackend, job_id: int) -> TaskResult:
    """The TaskResult of the attempt under way, read from its job's row."""
    return backend._result(job_detail(backend.app._shared_connection(), job_id))


def _finish(backend: PgQueueBackend, result: TaskResult, error: BaseException | None) -> None:
    object.__setattr__(result, "finished_at", timezone.now())
    if error is None:
        object.__setattr__(result, "status", TaskResultStatus.SUCCESSFUL)
    else:
        kind = type(error)
        result.errors.append(
            TaskError(
                exception_class_path=f"{kind.__module__}.{kind.__qualname__}",
                traceback="".join(traceback.format_exception(error)),
            )
        )
        object.__setattr__(result, "status", TaskResultStatus.FAILED)
    task_finished.send(type(backend), task_result=result)


def _runner(backend: PgQueueBackend, task: DjangoTask) -> Callable[..., Any]:
    """The function the pgqueue task runs: Django's signals around a call of the task's
    function (with its TaskContext if it takes one), the return value made JSON as Django's
    own backends make it."""
    func = task.func

    if inspect.iscoroutinefunction(func):

        async def run_async(*args: Any, **kwargs: Any) -> Any:
            job_id = _running_job(task)
            result = await sync_to_async(_running_result, thread_sensitive=False)(backend, job_id)
            task_started.send(type(backend), task_result=result)
            try:
                if task.takes_context:
                    value = await func(TaskContext(task_result=result), *args, **kwargs)
                else:
                    value = await func(*args, **kwargs)
                value = normalize_json(value)
            except BaseException as exc:
                _finish(backend, result, exc)
                raise
            _finish(backend, result, None)
            return value

        run_async.django_task_func = func  # type: ignore[attr-defined]
        return run_async

    def run(*args: Any, **kwargs: Any) -> Any:
        result = _running_result(backend, _running_job(task))
        task_started.send(type(backend), task_result=result)
        try:
            if task.takes_context:
                value = func(TaskContext(task_result=result), *args, **kwargs)
            else:
                value = func(*args, **kwargs)
            value = normalize_json(value)
        except BaseException as exc:
            _finish(backend, result, exc)
            raise
        _finish(backend, result, None)
        return value

    run.django_task_func = func  # type: ignore[attr-defined]
    return run
