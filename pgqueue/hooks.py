"""Instrumentation hooks: code an integration runs around each enqueue and each attempt.

Two seams, both context-manager factories installed on an App, for tracing, profiling or
auditing that needs to be *around* the work rather than told about it afterwards (for that,
see `pgqueue.signals`):

- `app.add_enqueue_hook(hook)`: `hook(enqueueing)` is entered once per enqueue call (one
  `apply_async`, or one `delay_many` for all its jobs), after every argument was checked and
  before the INSERT or COPY runs; it may add `enqueueing.headers`, which are stored with the
  job(s). Once the jobs are written, `enqueueing.job_ids` holds their ids; if writing them
  raised, the hook's `__exit__` is given the exception.
- `app.add_attempt_wrapper(wrapper)`: `wrapper(attempt)` is entered around the task function
  where it runs (the worker's thread for a sync task, the job's own asyncio task for an async
  one, the child process with `--pool process`, `pgqueue.testing.drain()` too), so whatever
  it makes current (a span, a context variable) is current in the task. Its `__exit__` sees
  what the function raised; `attempt.outcome` says what the attempt comes to.

>>> @contextlib.contextmanager
... def timed(attempt):
...     started = time.monotonic()
...     try:
...         yield
...     finally:
...         print(attempt.job.task_name, attempt.outcome, time.monotonic() - started)
>>> app.add_attempt_wrapper(timed)

Nothing is called, and nothing is built, while no hook is installed; eager mode
(`pgqueue.testing.eager()`) calls none. A hook that raises (on
entry or exit) is logged, once per hook and exception type, and left out: it never costs a
job, an enqueue or the worker. A hook cannot swallow an error: what `__exit__` returns is
ignored. Hooks of an app loaded by a process-pool child are those its module installs on
import.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeVar

from pgqueue.context import JobContext

if TYPE_CHECKING:
    from pgqueue.enqueue import JobRequest

logger = logging.getLogger("pgqueue.hooks")

T = TypeVar("T")


class Enqueueing:
    """What an enqueue hook sees: one enqueue call of `count` jobs of one task and queue.

    `headers`: the headers the jobs will have (those passed to `apply_async(headers=...)`
    first); a hook adds its own. `job_ids`: empty until the jobs are written. `in_transaction`:
    written with `connection=`, in the caller's transaction (they exist once it commits).
    """

    __slots__ = ("count", "headers", "in_transaction", "job_ids", "queue", "task_name")

    def __init__(
        self, task_name: str, queue: str, count: int, headers: dict[str, Any], in_transaction: bool
    ) -> None:
        self.task_name = task_name
        self.queue = queue
        self.count = count
        self.headers = headers
        self.in_transaction = in_transaction
        self.job_ids: list[int] = []

    def __repr__(self) -> str:
        return f"<Enqueueing {self.count} job(s) of {self.task_name} into {self.queue}>"


class Attempt:
    """What an attempt wrapper sees: `job`, the attempt's `pgqueue.JobContext` (id, task,
    queue, attempt, headers, ...), and `outcome` once the function has returned or raised:
    "succeeded" (it returned), "queued" (another attempt follows), "failed", "cancelled",
    "lost" (a transactional task's job was taken back from this worker meanwhile), or
    "interrupted" (an async task cancelled from outside: a timeout, a cancel request or a
    shutdown; the worker decides what follows). None while the function runs."""

    __slots__ = ("job", "outcome")

    def __init__(self, job: JobContext) -> None:
        self.job = job
        self.outcome: str | None = None

    def __repr__(self) -> str:
        return f"<Attempt {self.job.attempt} of job {self.job.id} {self.job.task_name}>"


EnqueueHook = Callable[[Enqueueing], AbstractContextManager[Any]]
AttemptWrapper = Callable[[Attempt], AbstractContextManager[Any]]


class Hooks:
    """The hooks installed on one App (tuples: installing one while a job runs is safe)."""

    __slots__ = ("_lock", "attempt_wrappers", "enqueue_hooks")

    def __init__(self) -> None:
        self.enqueue_hooks: tuple[EnqueueHook, ...] = ()
        self.attempt_wrappers: tuple[AttemptWrapper, ...] = ()
        self._lock = threading.Lock()

    def add(self, kind: str, hook: Callable[..., Any]) -> None:
        if not callable(hook):
            raise TypeError(f"an {kind} must be callable, got {hook!r}")
        with self._lock:
            if kind == "enqueue hook" and hook not in self.enqueue_hooks:
                self.enqueue_hooks = (*self.enqueue_hooks, hook)
            elif kind == "attempt wrapper" and hook not in self.attempt_wrappers:
                self.attempt_wrappers = (*self.attempt_wrappers, hook)

    def remove(self, kind: str, hook: Callable[..., Any]) -> bool:
        with self._lock:
            if kind == "enqueue hook":
                kept_enqueue = tuple(h for h in self.enqueue_hooks if h != hook)
                removed = len(kept_enqueue) != len(self.enqueue_hooks)
                self.enqueue_hooks = kept_enqueue
            else:
                kept_attempt = tuple(h for h in self.attempt_wrappers if h != hook)
                removed = len(kept_attempt) != len(self.attempt_wrappers)
                self.attempt_wrappers = kept_attempt
        return removed


_reported: set[tuple[str, int, type[BaseException]]] = set()


def _report(kind: str, hook: Callable[..., Any], exc: BaseException) -> None:
    key = (kind, id(hook), type(exc))
    if key in _reported:
        return
    _reported.add(key)
    name = getattr(hook, "__qualname__", repr(hook))
    logger.error(
        "%s %s raised %s (logged once; the job and the worker go on without it)",
        kind,
        name,
        type(exc).__name__,
        exc_info=exc,
    )


@contextlib.contextmanager
def _entered(kind: str, hooks: Sequence[Callable[[T], Any]], arg: T) -> Iterator[None]:
    """Enter each hook's context manager (leaving out those that fail), run the body, and exit
    them in reverse order with what the body raised, which is raised on unchanged."""
    entered: list[tuple[Callable[[T], Any], Any]] = []
    for hook in hooks:
        try:
            manager = hook(arg)
            manager.__enter__()
        except Exception as exc:
            _report(kind, hook, exc)
        else:
            entered.append((hook, manager))
    try:
        yield
    except BaseException as raised:
        _exit_all(kind, entered, raised)
        raise
    _exit_all(kind, entered, None)


def _exit_all(kind: str, entered: list[tuple[Any, Any]], raised: BaseException | None) -> None:
    for hook, manager in reversed(entered):
        try:
            if raised is None:
                manager.__exit__(None, None, None)
            else:
                manager.__exit__(type(raised), raised, raised.__traceback__)
        except BaseException as exc:
            if exc is not raised:  # re-raising what it was given is how many managers exit
                _report(kind, hook, exc)


@contextlib.contextmanager
def around_enqueue(
    hooks: Sequence[EnqueueHook], request: JobRequest, count: int, in_transaction: bool
) -> Iterator[tuple[Enqueueing, JobRequest]]:
    """Enter the enqueue hooks for `count` jobs of `request`; yields the Enqueueing and the
    request to write (with the headers the hooks added). Headers a hook made that cannot be
    stored are logged and left out: the job is written as it was asked for."""
    from pgqueue import _json
    from pgqueue.enqueue import headers_json

    given = request.headers_json
    headers: dict[str, Any] = _json.loads(given) if given is not None else {}
    enqueueing = Enqueueing(request.task_name, request.queue, count, dict(headers), in_transaction)
    with _entered("enqueue hook", hooks, enqueueing):
        if enqueueing.headers != headers:
            try:
                stored = headers_json(enqueueing.headers) if enqueueing.headers else None
            except Exception as exc:
                logger.error(
                    "enqueue hooks set headers that cannot be stored (%s); job(s) of %s "
                    "enqueued without them",
                    exc,
                    request.task_name,
                )
            else:
                request = _replace_headers(request, stored)
        yield enqueueing, request


def _replace_headers(request: JobRequest, stored: str | None) -> JobRequest:
    import dataclasses

    return dataclasses.replace(request, headers_json=stored)


def wrap_sync(
    wrappers: Sequence[AttemptWrapper], job: JobContext, call: Callable[[], Any], task: Any
) -> Callable[[], Any]:
    """`call` run inside the attempt wrappers (it runs where the task runs)."""

    def run() -> Any:
        attempt = Attempt(job)
        with _entered("attempt wrapper", wrappers, attempt):
            try:
                value = call()
            except BaseException as exc:
                attempt.outcome = _outcome_of(task, job, exc)
                raise
            attempt.outcome = "succeeded"
            return value

    return run


async def wrap_async(
    wrappers: Sequence[AttemptWrapper], job: JobContext, coro: Any, task: Any
) -> Any:
    """Await `coro` inside the attempt wrappers, in the asyncio task that runs it."""
    import asyncio

    attempt = Attempt(job)
    with _entered("attempt wrapper", wrappers, attempt):
        try:
            value = await coro
        except asyncio.CancelledError:
            attempt.outcome = "interrupted"
            raise
        except BaseException as exc:
            attempt.outcome = _outcome_of(task, job, exc)
            raise
        attempt.outcome = "succeeded"
        return value


def _outcome_of(task: Any, job: JobContext, exc: BaseException) -> str:
    """The status an attempt that raised `exc` comes to, decided as the worker decides it."""
    from pgqueue.execute import outcome_of_exception

    try:
        return str(outcome_of_exception(task, job._job, exc).status)
    except Exception:  # never a reason to lose the attempt's own exception
        return "failed"
