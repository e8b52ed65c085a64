"""Tasks: what `@app.task` makes. Calling one runs it inline; `delay`/`apply_async` enqueue it.

>>> @app.task(queue="emails", max_attempts=5, autoretry_for=(ConnectionError,))
... def send_welcome(user_id: int) -> str: ...
>>> send_welcome.delay(42)              # a Job, committed by pgqueue
>>> send_welcome.apply_async(args=(42,), countdown=60, connection=session)  # in your transaction
>>> await send_welcome.adelay(42)       # async twin

`@app.task(bind=True)` passes the Task itself as the function's first argument, as Celery does:
`self.request` is the running job's context and `self.retry(...)` asks for another attempt.

>>> @app.task(bind=True, max_attempts=5)
... def fetch(self, url: str) -> str:
...     try:
...         return download(url)
...     except TimeoutError as exc:
...         self.retry(exc=exc, countdown=2 ** self.request.retries)
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, NoReturn, ParamSpec, TypeVar

from pgqueue.config import validate_priority, validate_queue_name
from pgqueue.context import current_job
from pgqueue.enqueue import JobRequest, ainsert_job, build_request, insert_job
from pgqueue.errors import ConfigurationError, MaxRetriesExceeded, Retry
from pgqueue.hooks import around_enqueue
from pgqueue.job import Job
from pgqueue.limits import Limits
from pgqueue.retry import RetryPolicy
from pgqueue.unique import (
    TaskUniqueness,
    UniqueSpec,
    aenqueue_unique,
    enqueue_unique,
    options_for,
    states_for,
    task_uniqueness,
)

if TYPE_CHECKING:
    from pgqueue.app import App
    from pgqueue.canvas import Canvas, Signature
    from pgqueue.enqueue_many import BulkRequest

P = ParamSpec("P")
R = TypeVar("R")


def default_task_name(fn: Callable[..., Any]) -> str:
    return f"{fn.__module__}.{fn.__qualname__}"


def checked_task_name(fn: Callable[..., Any], name: str | None) -> str:
    """The task's name (`name`, else the function's module and qualified name), once `fn` is
    known to be a function and `name`, if given, a non-empty string."""
    if not callable(fn):
        raise ConfigurationError(f"@app.task decorates a function, got {fn!r}")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ConfigurationError(f"task name must be a non-empty string, got {name!r}")
    return name or default_task_name(fn)


def timeout_seconds(timeout: float | timedelta | None) -> float | None:
    """A task's `timeout` option in seconds; ConfigurationError unless positive."""
    if isinstance(timeout, timedelta):
        timeout = timeout.total_seconds()
    if timeout is not None and (isinstance(timeout, bool) or timeout <= 0):
        raise ConfigurationError(f"timeout must be > 0 seconds, got {timeout!r}")
    return float(timeout) if timeout is not None else None


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
        bind: bool = False,
        unique: UniqueSpec = None,
        unique_for: float | timedelta | None = None,
        on_conflict: str | None = None,
        unique_states: Sequence[str] | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.app = app
        self.fn = fn
        self.name: str = checked_task_name(fn, name)
        self.queue: str = validate_queue_name(queue)
        self.priority: int = validate_priority(priority)
        self.retry_policy: RetryPolicy = retry_policy or RetryPolicy()
        self.timeout: float | None = timeout_seconds(timeout)
        self.is_async: bool = inspect.iscoroutinefunction(fn)
        self.transactional: bool = bool(transactional)
        self.bind: bool = bool(bind)
        # Fleet-wide limits (rate, concurrency, per-key concurrency), None for none.
        self.limits: Limits | None = limits
        # What a worker calls with the job's arguments: the function, given this Task first
        # when it is bound.
        self.run: Callable[..., Any] = (
            functools.partial(fn, self) if self.bind else fn  # type: ignore[arg-type]
        )
        # How its jobs are unique (`unique=`, `unique_for=`, `on_conflict=`,
        # `unique_states=`), None for most.
        self.uniqueness: TaskUniqueness | None = task_uniqueness(
            self.name, self.run, unique, unique_for, on_conflict, unique_states
        )
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", self.name)
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<Task {self.name} queue={self.queue}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function inline, here and now, as a plain call."""
        return self.run(*args, **kwargs)  # type: ignore[no-any-return]

    # -- bound tasks (`bind=True`) --------------------------------------------------------

    @property
    def request(self) -> Any:
        """The job this thread or coroutine runs (`pgqueue.current_job()`), with Celery's
        names: `id`, `retries` (attempts before this one), `attempt`, `max_attempts`, `args`,
        `kwargs`, `headers`, `queue`, `task`, `priority`. Outside a worker (a plain call, eager mode
        aside) there is no job: `id` is None and `retries` 0."""
        return current_job() or NoJob(self.name, self.queue, self.retry_policy.max_attempts)

    def retry(
        self,
        exc: BaseException | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        max_retries: int | None = None,
    ) -> NoReturn:
        """Ask for another attempt of the running job: raises `pgqueue.Retry`.

        `countdown` (seconds) or `eta` (aware datetime) says when; with neither, the task's
        backoff decides. `exc` is recorded as the reason. `max_retries` gives up sooner than
        the task's `max_attempts` (never later): once that many retries were made, raises
        `pgqueue.MaxRetriesExceeded` and the job ends FAILED. With no attempts left the job
        ends FAILED too. `raise self.retry(...)` (Celery's spelling) works the same.
        """
        ask_retry(self.name, self.request.retries, exc, countdown, eta, max_retries)

    # -- signatures (pgqueue.canvas) ----------------------------------------------------

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature of this task: a call to enqueue later, in a chain, group or chord, or as
        a callback. Used after another step, it gets that step's result prepended to `args`.

        >>> pgqueue.chain(fetch.s(url), parse.s()).apply_async()
        """
        from pgqueue.canvas import Signature

        return Signature(self.app, self.name, args, kwargs, task=self)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: it waits for the steps before it, but takes nothing from
        them (its arguments are exactly these)."""
        from pgqueue.canvas import Signature

        return Signature(self.app, self.name, args, kwargs, task=self, immutable=True)

    def signature(
        self,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        immutable: bool = False,
        **options: Any,
    ) -> Signature:
        """`s()` with the arguments as a tuple and a dict, and options (queue, priority,
        countdown, eta, expires, headers)."""
        from pgqueue.canvas import Signature

        return Signature(
            self.app, self.name, args, kwargs, task=self, immutable=immutable, options=options
        )

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
        headers: Mapping[str, Any] | None = None,
        unique_key: str | None = None,
        unique_for: float | timedelta | None = None,
        on_conflict: str | None = None,
        unique_states: Sequence[str] | None = None,
        concurrency_key: str | None = None,
        link: Canvas | Sequence[Canvas] | None = None,
        link_error: Canvas | Sequence[Canvas] | None = None,
    ) -> Job:
        """Enqueue with options.

        `countdown` (seconds or timedelta) or `eta` (aware datetime) delays the first run;
        `priority` (higher runs first) and `queue` override the task's defaults. `expires`
        (seconds or timedelta from now, or an aware datetime): a job not started by then is
        never run and ends CANCELLED with error type "Expired". With
        `connection=` (psycopg 3 Connection or SQLAlchemy Connection/Session) the job is
        written in that connection's current transaction and pgqueue does not commit: the job
        exists if and only if your transaction commits. `headers` (a dict of JSON values)
        travel with the job, apart from its arguments: the task reads them as
        `pgqueue.current_job().headers`. `concurrency_key` (a string, for a task declared with
        `key_concurrency_limit=N`): at most N jobs of one key run at once, fleet-wide.

        `unique_key` (a string) makes the job unique: while a job holding the key is queued
        or running, this enqueue inserts nothing and returns that job (`job.created` is
        False), or with `on_conflict="replace"` gives it these arguments and options while it
        is still queued (`job.replaced`). `unique_for` (seconds or timedelta) also holds the
        key for that long after the job that took it was enqueued, whatever its state.
        `unique_states=("queued",)`: only a queued job holds the key, so one job waits per key
        while another may run. A task declared with `unique=` makes the key from the
        arguments; these override it.

        `link`: signature(s) enqueued when the job succeeds, given its result (first
        argument); `link_error`: signature(s) enqueued once if it fails for good or is
        cancelled, given `(job_id, error)`. Either makes the job the first step of a
        workflow (`job.workflow_id`, see pgqueue.workflows), written in one transaction.
        """
        if link is not None or link_error is not None:
            _refuse_in_workflow(unique_key, unique_for, on_conflict, unique_states)
            options = _options(countdown, eta, priority, queue, expires, headers, concurrency_key)
            flow = self.signature(args or (), kwargs, **options).apply_async(
                connection=connection, link=link, link_error=link_error
            )
            return flow.jobs[0]
        request = self._request(
            args, kwargs, countdown, eta, priority, queue, expires, headers, concurrency_key
        )
        self._make_unique(request, args, kwargs, unique_key, unique_for, on_conflict, unique_states)
        if self.app._eager is not None:  # pgqueue.testing.eager(): run here, now, no database
            return self.app._eager(self, request, False)  # type: ignore[no-any-return]
        if connection is None:
            connection = self.app._caller_transaction()
        hooks = self.app._hooks.enqueue_hooks
        if not hooks:  # the common case, written out: this is what `delay()` runs
            if request.unique is not None:
                return self._write_unique(request, connection)
            if connection is None:
                return Job(self.app, self.app._insert_committed(request))
            return Job(self.app, insert_job(connection, request))
        with around_enqueue(hooks, request, 1, connection is not None) as (enqueueing, request):
            if request.unique is not None:
                job = self._write_unique(request, connection)
                enqueueing.job_ids.append(job.id)
                return job
            row = self._insert(request, connection)
            enqueueing.job_ids.append(row["id"])
        return Job(self.app, row)

    def _write_unique(self, request: JobRequest, connection: Any) -> Job:
        options = request.unique
        assert options is not None
        rows = {options.key: (request.args_json, request.kwargs_json)}
        if connection is None:
            conn, owned = self.app._shared_connection(), True
        else:
            conn, owned = connection, False
        by_key = enqueue_unique(
            conn, request, rows, options.period, options.replace, options.queued_only, owned=owned
        )
        written = by_key[options.key]
        return Job(self.app, written.row, created=written.created, replaced=written.replaced)

    def _insert(self, request: JobRequest, connection: Any) -> dict[str, Any]:
        if connection is None:
            return self.app._insert_committed(request)
        return insert_job(connection, request)

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
        headers: Mapping[str, Any] | None = None,
        concurrency_key: str | None = None,
        unique_states: Sequence[str] | None = None,
    ) -> list[int]:
        """Enqueue one job per call with a single COPY; returns the new job ids, in order.

        Each call is a tuple/list of positional arguments or a dict of keyword arguments
        (a task taking one dict argument gets `(the_dict,)`). The options apply to every job.
        Everything is checked before anything is written. With `connection=` (psycopg 3, or
        SQLAlchemy on the psycopg driver) the jobs join that transaction. Every job gets the
        same `headers` (and `concurrency_key`).

        For a task declared with `unique=`, each job's key is made from its call: a key that a
        queued or running job holds (or that an earlier call of the batch made) inserts
        nothing, and its place in the list holds the id of the job that has the key.
        `unique_states` overrides the task's (see `apply_async`).

        >>> send_receipt.delay_many([(order_id,) for order_id in order_ids])
        """
        from pgqueue.enqueue_many import BulkRequest, build_bulk_request

        request = build_bulk_request(
            self,
            calls,
            countdown=countdown,
            eta=eta,
            priority=priority,
            queue=queue,
            expires=expires,
            headers=headers,
            key_of=self.uniqueness.builder.key if self.uniqueness is not None else None,
            concurrency_key=concurrency_key,
            queued_only=self._queued_only(unique_states),
        )
        if connection is None:
            connection = self.app._caller_transaction()
        hooks = self.app._hooks.enqueue_hooks
        if not (hooks and request.rows):
            return self._copy(request, connection)
        count, in_transaction = len(request.rows), connection is not None
        with around_enqueue(hooks, request.template, count, in_transaction) as (enqueueing, t):
            ids = self._copy(
                BulkRequest(t, request.rows, request.keys, request.queued_only), connection
            )
            enqueueing.job_ids.extend(ids)
        return ids

    def _copy(self, request: BulkRequest, connection: Any) -> list[int]:
        from pgqueue.enqueue_many import copy_jobs

        if request.keys is not None and request.rows:
            return self._write_unique_many(request, connection)
        if connection is not None:
            return copy_jobs(connection, request)
        return copy_jobs(self.app._shared_connection(), request, owned=True)

    def _write_unique_many(self, request: BulkRequest, connection: Any) -> list[int]:
        assert self.uniqueness is not None and request.keys is not None
        period, replace = self.uniqueness.period, self.uniqueness.replace
        rows = _unique_rows(request, replace)
        if connection is None:
            conn, owned = self.app._shared_connection(), True
        else:
            conn, owned = connection, False
        written = enqueue_unique(
            conn, request.template, rows, period, replace, request.queued_only, owned=owned
        )
        return [written[key].row["id"] for key in request.keys]

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
        headers: Mapping[str, Any] | None = None,
        concurrency_key: str | None = None,
        unique_states: Sequence[str] | None = None,
    ) -> list[int]:
        """Async twin of `delay_many()`."""
        from pgqueue.enqueue_many import BulkRequest, build_bulk_request

        request = build_bulk_request(
            self,
            calls,
            countdown=countdown,
            eta=eta,
            priority=priority,
            queue=queue,
            expires=expires,
            headers=headers,
            key_of=self.uniqueness.builder.key if self.uniqueness is not None else None,
            concurrency_key=concurrency_key,
            queued_only=self._queued_only(unique_states),
        )
        hooks = self.app._hooks.enqueue_hooks
        if not (hooks and request.rows):
            return await self._acopy(request, connection)
        count, in_transaction = len(request.rows), connection is not None
        with around_enqueue(hooks, request.template, count, in_transaction) as (enqueueing, t):
            ids = await self._acopy(
                BulkRequest(t, request.rows, request.keys, request.queued_only), connection
            )
            enqueueing.job_ids.extend(ids)
        return ids

    async def _acopy(self, request: BulkRequest, connection: Any) -> list[int]:
        from pgqueue.enqueue_many import acopy_jobs

        if request.keys is not None and request.rows:
            assert self.uniqueness is not None
            period, replace = self.uniqueness.period, self.uniqueness.replace
            rows = _unique_rows(request, replace)
            if connection is None:
                conn, owned = await self.app._ashared_connection(), True
            else:
                conn, owned = connection, False
            written = await aenqueue_unique(
                conn, request.template, rows, period, replace, request.queued_only, owned=owned
            )
            return [written[key].row["id"] for key in request.keys]
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
        headers: Mapping[str, Any] | None = None,
        unique_key: str | None = None,
        unique_for: float | timedelta | None = None,
        on_conflict: str | None = None,
        unique_states: Sequence[str] | None = None,
        concurrency_key: str | None = None,
        link: Canvas | Sequence[Canvas] | None = None,
        link_error: Canvas | Sequence[Canvas] | None = None,
    ) -> Job:
        """Async twin of `apply_async()`; `connection=` takes a psycopg AsyncConnection or a
        SQLAlchemy AsyncConnection/AsyncSession."""
        if link is not None or link_error is not None:
            _refuse_in_workflow(unique_key, unique_for, on_conflict, unique_states)
            options = _options(countdown, eta, priority, queue, expires, headers, concurrency_key)
            flow = await self.signature(args or (), kwargs, **options).aapply_async(
                connection=connection, link=link, link_error=link_error
            )
            return flow.jobs[0]
        request = self._request(
            args, kwargs, countdown, eta, priority, queue, expires, headers, concurrency_key
        )
        self._make_unique(request, args, kwargs, unique_key, unique_for, on_conflict, unique_states)
        if self.app._eager is not None:  # pgqueue.testing.eager(): run here, now, no database
            return await self.app._eager(self, request, True)  # type: ignore[no-any-return]
        hooks = self.app._hooks.enqueue_hooks
        if not hooks:
            if request.unique is not None:
                return await self._awrite_unique(request, connection)
            return Job(self.app, await self._ainsert(request, connection))
        with around_enqueue(hooks, request, 1, connection is not None) as (enqueueing, request):
            if request.unique is not None:
                job = await self._awrite_unique(request, connection)
                enqueueing.job_ids.append(job.id)
                return job
            row = await self._ainsert(request, connection)
            enqueueing.job_ids.append(row["id"])
        return Job(self.app, row)

    async def _awrite_unique(self, request: JobRequest, connection: Any) -> Job:
        options = request.unique
        assert options is not None
        rows = {options.key: (request.args_json, request.kwargs_json)}
        if connection is None:
            conn, owned = await self.app._ashared_connection(), True
        else:
            conn, owned = connection, False
        by_key = await aenqueue_unique(
            conn, request, rows, options.period, options.replace, options.queued_only, owned=owned
        )
        written = by_key[options.key]
        return Job(self.app, written.row, created=written.created, replaced=written.replaced)

    async def _ainsert(self, request: JobRequest, connection: Any) -> dict[str, Any]:
        if connection is None:
            return await self.app._ainsert_committed(request)
        return await ainsert_job(connection, request)

    def _make_unique(
        self,
        request: JobRequest,
        args: Sequence[Any] | None,
        kwargs: Mapping[str, Any] | None,
        unique_key: str | None,
        unique_for: float | timedelta | None,
        on_conflict: str | None,
        unique_states: Sequence[str] | None,
    ) -> None:
        """Give `request` its unique key and how it is unique, from these options and the
        task's `unique=` (apply_async and its async twin); nothing for most jobs."""
        if (
            unique_key is None
            and self.uniqueness is None
            and unique_for is None
            and on_conflict is None
            and unique_states is None
        ):
            return
        request.unique = options_for(
            self.uniqueness,
            args or (),
            kwargs or {},
            unique_key,
            unique_for,
            on_conflict,
            unique_states,
        )

    def _queued_only(self, unique_states: Sequence[str] | None) -> bool:
        """Whether a bulk enqueue's keys are held while queued only (`delay_many`'s
        `unique_states=` over the task's); checked before anything is written."""
        if unique_states is not None and self.uniqueness is None:
            raise ConfigurationError(
                f"delay_many(unique_states=...) applies to tasks with unique jobs: declare "
                f"{self.name} with @app.task(unique=...)"
            )
        return states_for(self.uniqueness, unique_states)

    def _request(
        self,
        args: Sequence[Any] | None,
        kwargs: Mapping[str, Any] | None,
        countdown: float | timedelta | None,
        eta: datetime | None,
        priority: int | None,
        queue: str | None,
        expires: float | timedelta | datetime | None = None,
        headers: Mapping[str, Any] | None = None,
        concurrency_key: str | None = None,
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
            headers=headers,
            concurrency_key=concurrency_key,
        )


def _unique_rows(request: BulkRequest, replace: bool) -> dict[str, tuple[str, str]]:
    """The jobs of a bulk request by key, as JSON text (COPY's escaping undone): of calls
    that share a key, the first is written, or with `replace` the last (as if each had been
    enqueued in turn)."""
    assert request.keys is not None
    rows: dict[str, tuple[str, str]] = {}
    for key, (args, kwargs) in zip(request.keys, request.rows, strict=True):
        if replace or key not in rows:
            rows[key] = (args.replace("\\\\", "\\"), kwargs.replace("\\\\", "\\"))
    return rows


def _options(
    countdown: float | timedelta | None,
    eta: datetime | None,
    priority: int | None,
    queue: str | None,
    expires: float | timedelta | datetime | None,
    headers: Mapping[str, Any] | None,
    concurrency_key: str | None,
) -> dict[str, Any]:
    """apply_async's options that were given, as a signature takes them."""
    given = {
        "countdown": countdown,
        "eta": eta,
        "priority": priority,
        "queue": queue,
        "expires": expires,
        "headers": headers,
        "concurrency_key": concurrency_key,
    }
    return {name: value for name, value in given.items() if value is not None}


def _refuse_in_workflow(*options: Any) -> None:
    """A workflow's steps take no unique key (a duplicate would be a job outside the
    workflow): refused, not dropped."""
    if any(option is not None for option in options):
        raise ConfigurationError(
            "link=/link_error= (a workflow) cannot be combined with unique_key=, unique_for=, "
            "on_conflict= or unique_states=: enqueue the job without them, or without callbacks"
        )


def ask_retry(
    task_name: str,
    retries: int,
    exc: BaseException | None,
    countdown: float | None,
    eta: datetime | None,
    max_retries: int | None,
) -> NoReturn:
    """What `self.retry()` of a bound task raises: `Retry`, or `MaxRetriesExceeded` once
    `retries` reached `max_retries`."""
    if max_retries is not None and retries >= max_retries:
        what = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        raise MaxRetriesExceeded(
            f"{task_name} gave up after {max_retries} retries (max_retries){what}"
        ) from exc
    reason = f"{type(exc).__name__}: {exc}" if exc is not None else None
    raise Retry(countdown, eta=eta, reason=reason) from exc


class NoJob:
    """`request` of a bound task outside a worker: the task called as a plain function."""

    id = None
    attempt = 1
    retries = 0
    priority = 0
    connection = None
    cancel_requested = False

    def __init__(self, task_name: str, queue: str, max_attempts: int) -> None:
        self.task = self.task_name = task_name
        self.queue = queue
        self.max_attempts = max_attempts
        self.args: list[Any] = []
        self.kwargs: dict[str, Any] = {}
        self.headers: dict[str, Any] = {}

    def raise_if_cancelled(self) -> None:
        """Nothing can cancel a plain call."""
