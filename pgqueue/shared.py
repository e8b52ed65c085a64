"""Shared tasks: declared without an App, known to every App, enqueued through the current App.

For code that cannot import the project's App, such as a reusable library:

>>> @pgqueue.shared_task(queue="maintenance", max_attempts=5)
... def purge_sessions(days: int) -> int: ...
>>> purge_sessions.delay(30)           # enqueued through pgqueue.current_app()

Every App of the process knows every shared task, whichever was made first, so the worker of
any App runs them once the module that declares them is imported. Each App holds its own
`Task` for a shared task (`app.tasks[name]`, or `shared.for_app(app)`), which goes to that
App's default queue unless the declaration names one.

The current App is the App created last, or the one `app.set_as_current()` chose since
(whichever came later). A worker makes its App current, and so does the `pgqueue_app` test
fixture. A process with one App never has to think about it.
"""

from __future__ import annotations

import functools
import inspect
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, NoReturn, ParamSpec, TypeVar, overload

from pgqueue.config import DEFAULT_QUEUE, validate_priority, validate_queue_name
from pgqueue.context import current_job
from pgqueue.errors import ConfigurationError
from pgqueue.job import Job
from pgqueue.retry import DEFAULT_BACKOFF_MAX, DEFAULT_MAX_ATTEMPTS, RetryPolicy
from pgqueue.tasks import NoJob, Task, ask_retry, checked_task_name, timeout_seconds
from pgqueue.unique import UniqueSpec, task_uniqueness

if TYPE_CHECKING:
    from pgqueue.app import App
    from pgqueue.canvas import Signature

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F", bound=Callable[..., Any])

# Declarations, App creation and set_as_current() may come from several threads.
_lock = threading.RLock()
_shared: dict[str, SharedTask[Any, Any]] = {}
_apps: weakref.WeakSet[App] = weakref.WeakSet()
_current: App | None = None


def current_app() -> App:
    """The App shared tasks enqueue through: the App created last, or the one
    `app.set_as_current()` chose since. ConfigurationError while there is none."""
    if _current is None:
        raise ConfigurationError(
            "no pgqueue.App yet: create a pgqueue.App (or call app.set_as_current()) first"
        )
    return _current


def register_app(app: App) -> None:
    """For `App.__init__`: give the new App every shared task, and make it current."""
    global _current
    with _lock:
        _apps.add(app)
        for shared in _shared.values():
            app.tasks[shared.name] = shared.task_for(app)
        _current = app


def set_current(app: App) -> None:
    """For `App.set_as_current()`."""
    global _current
    with _lock:
        _current = app


def shared_task_named(name: str) -> SharedTask[Any, Any] | None:
    """The shared task of that name, if any: `App.task` refuses to reuse its name."""
    return _shared.get(name)


class SharedTask(Generic[P, R]):
    """What `@pgqueue.shared_task` makes: a task every App knows. Calling it runs the function
    inline; `delay()` and the other ways to enqueue go through the current App's Task for it.
    """

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None,
        queue: str | None,
        priority: int,
        retry_policy: RetryPolicy,
        timeout: float | timedelta | None,
        transactional: bool,
        bind: bool,
        unique: UniqueSpec = None,
        unique_for: float | timedelta | None = None,
        on_conflict: str | None = None,
        unique_states: Sequence[str] | None = None,
    ) -> None:
        self.fn = fn
        self.name: str = checked_task_name(fn, name)
        self.declared_queue = validate_queue_name(queue) if queue is not None else None
        self.priority: int = validate_priority(priority)
        self.retry_policy = retry_policy
        self.timeout: float | None = timeout_seconds(timeout)
        self.transactional = bool(transactional)
        self.bind = bool(bind)
        # Checked here, as @app.task checks them (the function as a worker calls it).
        run: Callable[..., Any] = functools.partial(fn, None) if self.bind else fn  # type: ignore[arg-type]
        task_uniqueness(self.name, run, unique, unique_for, on_conflict, unique_states)
        self.unique, self.unique_for, self.on_conflict = unique, unique_for, on_conflict
        self.unique_states = unique_states
        self.is_async: bool = inspect.iscoroutinefunction(fn)
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", self.name)
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<SharedTask {self.name}>"

    def task_for(self, app: App) -> Task[P, R]:
        """A new Task of `app` for this shared task (what `app.tasks` holds)."""
        return Task(
            app,
            self.fn,
            name=self.name,
            queue=self.declared_queue or app.default_queue,
            priority=self.priority,
            retry_policy=self.retry_policy,
            timeout=self.timeout,
            transactional=self.transactional,
            bind=self.bind,
            unique=self.unique,
            unique_for=self.unique_for,
            on_conflict=self.on_conflict,
            unique_states=self.unique_states,
        )

    def for_app(self, app: App) -> Task[P, R]:
        """`app`'s Task for this shared task: what its worker runs."""
        task = app.tasks.get(self.name)
        if task is None or task.fn is not self.fn:
            raise ConfigurationError(f"{app!r} has no task for shared task {self.name}")
        return task

    @property
    def app(self) -> App:
        """The App `delay()` enqueues through: `pgqueue.current_app()`."""
        if _current is None:
            raise ConfigurationError(
                "create a pgqueue.App (or call app.set_as_current()) before enqueueing "
                f"shared task {self.name}"
            )
        return _current

    @property
    def queue(self) -> str:
        """The queue its jobs go to: the declared one, else the current App's default."""
        if self.declared_queue is not None:
            return self.declared_queue
        return _current.default_queue if _current is not None else DEFAULT_QUEUE

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run the function inline, here and now, as a plain call (no App needed)."""
        if self.bind:
            return self.fn(self, *args, **kwargs)  # type: ignore[arg-type]
        return self.fn(*args, **kwargs)

    # -- bound tasks (`bind=True`), in a plain call --------------------------------------

    @property
    def request(self) -> Any:
        """As `Task.request`: the running job's context, or a stand-in outside a worker."""
        return current_job() or NoJob(self.name, self.queue, self.retry_policy.max_attempts)

    def retry(
        self,
        exc: BaseException | None = None,
        countdown: float | None = None,
        eta: datetime | None = None,
        max_retries: int | None = None,
    ) -> NoReturn:
        """As `Task.retry()`: raises `pgqueue.Retry` (or `MaxRetriesExceeded`)."""
        ask_retry(self.name, self.request.retries, exc, countdown, eta, max_retries)

    # -- enqueueing, through the current App's Task (same arguments as Task's) -------------

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """As `Task.s()`, through the current App."""
        return self.for_app(self.app).s(*args, **kwargs)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """As `Task.si()`, through the current App."""
        return self.for_app(self.app).si(*args, **kwargs)

    def signature(self, *args: Any, **options: Any) -> Signature:
        """As `Task.signature()`, through the current App."""
        return self.for_app(self.app).signature(*args, **options)

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """As `Task.delay()`, through the current App."""
        return self.for_app(self.app).delay(*args, **kwargs)

    def apply_async(self, *args: Any, **options: Any) -> Job:
        """As `Task.apply_async()`, through the current App."""
        return self.for_app(self.app).apply_async(*args, **options)

    def delay_many(self, *args: Any, **options: Any) -> list[int]:
        """As `Task.delay_many()`, through the current App."""
        return self.for_app(self.app).delay_many(*args, **options)

    async def adelay(self, *args: P.args, **kwargs: P.kwargs) -> Job:
        """As `Task.adelay()`, through the current App."""
        return await self.for_app(self.app).adelay(*args, **kwargs)

    async def aapply_async(self, *args: Any, **options: Any) -> Job:
        """As `Task.aapply_async()`, through the current App."""
        return await self.for_app(self.app).aapply_async(*args, **options)

    async def adelay_many(self, *args: Any, **options: Any) -> list[int]:
        """As `Task.adelay_many()`, through the current App."""
        return await self.for_app(self.app).adelay_many(*args, **options)


def _declare(shared: SharedTask[Any, Any]) -> None:
    """Add `shared` to the registry and to every App, or refuse a name already taken."""
    with _lock:
        existing = _shared.get(shared.name)
        if existing is not None and existing.fn is not shared.fn:
            raise ConfigurationError(
                f"two shared tasks are named {shared.name!r}; give one of them another name="
            )
        if existing is None:
            for app in list(_apps):
                if shared.name in app.tasks:
                    raise ConfigurationError(
                        f"shared task {shared.name!r} has the name of a task of {app!r} "
                        "declared with @app.task; give one of them another name="
                    )
        _shared[shared.name] = shared
        for app in list(_apps):
            app.tasks[shared.name] = shared.task_for(app)


@overload
def shared_task(fn: F, /) -> SharedTask[Any, Any]: ...


@overload
def shared_task(
    fn: None = None,
    /,
    *,
    name: str | None = None,
    queue: str | None = None,
    priority: int = 0,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    retry_backoff: bool | float = True,
    retry_backoff_max: float = DEFAULT_BACKOFF_MAX,
    retry_jitter: bool = True,
    autoretry_for: Iterable[type[BaseException]] = (),
    timeout: float | timedelta | None = None,
    transactional: bool = False,
    bind: bool = False,
    unique: UniqueSpec = None,
    unique_for: float | timedelta | None = None,
    on_conflict: str | None = None,
    unique_states: Sequence[str] | None = None,
) -> Callable[[F], SharedTask[Any, Any]]: ...


def shared_task(
    fn: F | None = None,
    /,
    *,
    name: str | None = None,
    queue: str | None = None,
    priority: int = 0,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    retry_backoff: bool | float = True,
    retry_backoff_max: float = DEFAULT_BACKOFF_MAX,
    retry_jitter: bool = True,
    autoretry_for: Iterable[type[BaseException]] = (),
    timeout: float | timedelta | None = None,
    transactional: bool = False,
    bind: bool = False,
    unique: UniqueSpec = None,
    unique_for: float | timedelta | None = None,
    on_conflict: str | None = None,
    unique_states: Sequence[str] | None = None,
) -> SharedTask[Any, Any] | Callable[[F], SharedTask[Any, Any]]:
    """Declare a task without an App; bare or with `@app.task`'s options, checked here.

    Every App, made before or after, registers it; `delay()` and the rest enqueue through
    `pgqueue.current_app()`. Its name may not be that of an App's own task. Give it an explicit
    `name=` so that the name does not depend on where the module was imported from.

    >>> @pgqueue.shared_task(name="mylib.cleanup", queue="maintenance")
    ... def cleanup(days: int) -> None: ...
    """

    def declare(function: F) -> SharedTask[Any, Any]:
        if isinstance(function, (Task, SharedTask)):
            raise ConfigurationError(
                f"{function.name} is a task already: declare it once, and put @app.periodic "
                "above @pgqueue.shared_task"
            )
        policy = RetryPolicy.from_options(
            max_attempts=max_attempts,
            retry_backoff=retry_backoff,
            retry_backoff_max=retry_backoff_max,
            retry_jitter=retry_jitter,
            autoretry_for=tuple(autoretry_for),
        )
        shared: SharedTask[Any, Any] = SharedTask(
            function,
            name=name,
            queue=queue,
            priority=priority,
            retry_policy=policy,
            timeout=timeout,
            transactional=transactional,
            bind=bind,
            unique=unique,
            unique_for=unique_for,
            on_conflict=on_conflict,
            unique_states=unique_states,
        )
        _declare(shared)
        return shared

    if fn is not None:
        return declare(fn)
    return declare
