"""Tasks: what `@app.task` makes. Calling one runs it inline; `delay`/`apply_async` enqueue it.

>>> @app.task(queue="emails", max_attempts=5, autoretry_for=(ConnectionError,))
... def send_welcome(user_id: int) -> str: ...
>>> send_welcome.delay(42)              # a Job, committed by pgqueue
>>> send_welcome.apply_async(args=(42,), countdown=60, connection=session)  # in your transaction
>>> await send_welcome.adelay(42)       # async twin
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar

from pgqueue.config import validate_priority, validate_queue_name
from pgqueue.enqueue import JobRequest, ainsert_job, build_request, insert_job
from pgqueue.errors import ConfigurationError
from pgqueue.job import Job
from pgqueue.retry import RetryPolicy

if TYPE_CHECKING:
    from pgqueue.app import App

P = ParamSpec("P")
R = TypeVar("R")


def default_task_name(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


class Task(Generic[P, R]):
    """A registered task: the function plus its queue, priority, retry policy and timeout."""

    def __init__(
        self,
        app: App,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        queue: str = "default",
        priority: int = 0,
        retry_policy: RetryPolicy | None = None,
        timeout: float | timedelta | None = None,
        transactional: bool = False,
    ) -> None:
        if not callable(fn):
            raise ConfigurationError(f"@app.task decorates a function, got {fn!r}")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise ConfigurationError(f"task name must be a non-empty string, got {name!r}")
        if isinstance(timeout, timedelta):
            timeout = timeout.total_seconds()
        if timeout is not None and (isinstance(timeout, bool) or timeout <= 0):
            raise ConfigurationError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.app = app
        self.fn = fn
        self.name: str = name or default_task_name(fn)
        self.queue: str = validate_queue_name(queue)
        self.priority: int = validate_priority(priority)
        self.retry_policy: RetryPolicy = retry_policy or RetryPolicy()
        self.timeout: float | None = float(timeout) if timeout is not None else None
        self.is_async: bool = inspect.iscoroutinefunction(fn)
        self.transactional: bool = bool(transactional)
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", self.name)
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.queue}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function inline, here and now, as a plain call."""
        return self.fn(*args, **kwargs)

    # -- sync ---------------------------------------------------------------------------

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """Enqueue with these arguments and the task's defaults; pgqueue commits the job."""
        return self.apply_async(args=args, kwargs=kwargs)

    def apply_async(
        self,
        args: Sequence[Any] | None = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        countdown: float | timedelta | None = None,
        eta: datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        connection: Any = None,
        expires: float | timedelta | datetime | None = None,
    ) -> Job:
        """Enqueue with options.

        `countdown` (seconds or timedelta) or `eta` (aware datetime) delays the first run;
        `priority` (higher runs first) and `queue` override the task's defaults. `expires`
        (seconds or timedelta from now, or an aware datetime): a job not started by then is
        never run and ends CANCELLED with error type "Expired". With
        `connection=` (psycopg 3 Connection or SQLAlchemy Connection/Session) the job is
        written in that connection's current transaction and pgqueue does not commit: the job
        exists if and only if your transaction commits.
        """
        request = self._request(args, kwargs, countdown, eta, priority, queue, expires)
        if self.app._eager is not None:  # pgqueue.testing.eager(): run here, now, no database
            return self.app._eager(self, request, False)  # type: ignore[no-any-return]
        if connection is None:
            row = self.app._insert_committed(request)
        else:
            row = insert_job(connection, request)
        return Job(self.app, row)

    def delay_many(
        self,
        calls: Iterable[Sequence[Any] | Mapping[str, Any]],
        *,
        countdown: float | timedelta | None = None,
        eta: datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        expires: float | timedelta | datetime | None = None,
        connection: Any = None,
    ) -> list[int]:
        """Enqueue one job per call with a single COPY; returns the new job ids, in order.

        Each call is a tuple/list of positional arguments or a dict of keyword arguments
        (a task taking one dict argument gets `(the_dict,)`). The options apply to every job.
        Everything is checked before anything is written. With `connection=` (psycopg 3, or
        SQLAlchemy on the psycopg driver) the jobs join that transaction.

        >>> send_receipt.delay_many([(order_id,) for order_id in order_ids])
        """
        from pgqueue.enqueue_many import build_bulk_request, copy_jobs

        request = build_bulk_request(
            self,
            calls,
            countdown=countdown,
            eta=eta,
            priority=priority,
            queue=queue,
            expires=expires,
        )
        if connection is not None:
            return copy_jobs(connection, request)
        return copy_jobs(self.app._shared_connection(), request, owned=True)

    # -- async --------------------------------------------------------------------------

    async def adelay_many(
        self,
        calls: Iterable[Sequence[Any] | Mapping[str, Any]],
        *,
        countdown: float | timedelta | None = None,
        eta: datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        expires: float | timedelta | datetime | None = None,
        connection: Any = None,
    ) -> list[int]:
        """Async twin of `delay_many()`."""
        from pgqueue.enqueue_many import acopy_jobs, build_bulk_request

        request = build_bulk_request(
            self,
            calls,
            countdown=countdown,
            eta=eta,
            priority=priority,
            queue=queue,
            expires=expires,
        )
        if connection is not None:
            return await acopy_jobs(connection, request)
        return await acopy_jobs(await self.app._ashared_connection(), request, owned=True)

    async def adelay(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """Async twin of `delay()`."""
        return await self.aapply_async(args=args, kwargs=kwargs)

    async def aapply_async(
        self,
        args: Sequence[Any] | None = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        countdown: float | timedelta | None = None,
        eta: datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        connection: Any = None,
        expires: float | timedelta | datetime | None = None,
    ) -> Job:
        """Async twin of `apply_async()`; `connection=` takes a psycopg AsyncConnection or a
        SQLAlchemy AsyncConnection/AsyncSession."""
        request = self._request(args, kwargs, countdown, eta, priority, queue, expires)
        if self.app._eager is not None:  # pgqueue.testing.eager(): run here, now, no database
            return await self.app._eager(self, request, True)  # type: ignore[no-any-return]
        if connection is None:
            row = await self.app._ainsert_committed(request)
        else:
            row = await ainsert_job(connection, request)
        return Job(self.app, row)

    def _request(
        self,
        args: Sequence[Any] | None,
        kwargs: Mapping[str, Any] | None,
        countdown: float | timedelta | None,
        eta: datetime | None,
        priority: int | None,
        queue: str | None,
        expires: float | timedelta | datetime | None = None,
    ) -> JobRequest:
        return build_request(
            self,
            args,
            kwargs,
            countdown=countdown,
            eta=eta,
            priority=priority,
            queue=queue,
            expires=expires,
        )
