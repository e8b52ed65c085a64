"""@app.task: what it registers, and calling a task runs it inline."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta

import pytest

import pgqueue
from pgqueue.context import JobContext, _current
from pgqueue.execute import outcome_of_exception
from pgqueue.outcome import ClaimedJob, Failed
from pgqueue.retry import RetryPolicy

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/nowhere"


@pytest.fixture
def app() -> Iterator[pgqueue.App]:
    application = pgqueue.App(UNREACHABLE)
    yield application
    application.close()


def test_calling_a_task_runs_it_inline(app: pgqueue.App) -> None:
    calls: list[tuple[int, int]] = []

    @app.task
    def add(a: int, b: int) -> int:
        calls.append((a, b))
        return a + b

    assert add(2, b=3) == 5
    assert calls == [(2, 3)]


def test_calling_an_async_task_gives_its_coroutine(app: pgqueue.App) -> None:
    @app.task
    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    assert asyncio.run(double(21)) == 42


def test_bare_decorator_registers_a_sync_task_with_defaults(app: pgqueue.App) -> None:
    @app.task
    def plain() -> None:
        """Docs survive."""

    assert isinstance(plain, pgqueue.Task)
    assert (
        plain.name
        == f"{__name__}.test_bare_decorator_registers_a_sync_task_with_defaults.<locals>.plain"
    )
    assert app.tasks[plain.name] is plain
    assert (plain.queue, plain.priority, plain.timeout) == ("default", 0, None)
    assert plain.retry_policy == RetryPolicy()
    assert not plain.is_async
    assert plain.__doc__ == "Docs survive."
    assert plain.__name__ == "plain"


def test_bare_decorator_registers_an_async_task(app: pgqueue.App) -> None:
    @app.task
    async def coro() -> None: ...

    assert app.tasks[coro.name] is coro
    assert coro.is_async


@pytest.mark.parametrize("is_async", [False, True])
def test_decorator_with_options(app: pgqueue.App, is_async: bool) -> None:
    def sync_fn() -> None: ...

    async def async_fn() -> None: ...

    task = app.task(
        name="billing.charge",
        queue="billing",
        priority=5,
        max_attempts=6,
        retry_backoff=2,
        retry_backoff_max=30,
        retry_jitter=False,
        autoretry_for=(ConnectionError,),
        timeout=timedelta(seconds=90),
    )(async_fn if is_async else sync_fn)

    assert app.tasks["billing.charge"] is task
    assert task.is_async is is_async
    assert (task.queue, task.priority, task.timeout) == ("billing", 5, 90.0)
    assert task.retry_policy == RetryPolicy(
        max_attempts=6,
        backoff=2.0,
        backoff_max=30.0,
        jitter=False,
        autoretry_for=(ConnectionError,),
    )
    assert app.queues() == ("billing", "default")


def test_two_functions_with_one_name_are_refused(app: pgqueue.App) -> None:
    @app.task(name="same")
    def first() -> None: ...

    with pytest.raises(pgqueue.ConfigurationError, match="two tasks are named 'same'"):

        @app.task(name="same")
        def second() -> None: ...

    assert app.tasks["same"] is first


def test_registering_the_same_function_again_is_allowed(app: pgqueue.App) -> None:
    def job() -> None: ...

    first = app.task(job)
    second = app.task(job)
    assert app.tasks[second.name] is second
    assert first.fn is second.fn


@pytest.mark.parametrize(
    "options",
    [
        {"name": ""},
        {"name": "   "},
        {"queue": "no spaces"},
        {"priority": 40_000},
        {"timeout": 0},
        {"timeout": -1.0},
        {"timeout": timedelta(0)},
        {"max_attempts": 0},
        {"autoretry_for": ("ValueError",)},
    ],
)
def test_invalid_task_options_are_refused(app: pgqueue.App, options: dict[str, object]) -> None:
    with pytest.raises(pgqueue.ConfigurationError):
        app.task(**options)(lambda: None)  # type: ignore[call-overload]
    assert app.tasks == {}


def test_decorating_a_non_callable_is_refused(app: pgqueue.App) -> None:
    with pytest.raises(pgqueue.ConfigurationError, match="decorates a function"):
        app.task(42)  # type: ignore[call-overload]


def test_current_job_is_none_outside_a_worker() -> None:
    assert pgqueue.current_job() is None


# -- bind=True ----------------------------------------------------------------------------


def test_a_bound_task_gets_itself_first_and_no_job_outside_a_worker(app: pgqueue.App) -> None:
    @app.task(bind=True, queue="reports", max_attempts=4)
    def whoami(self: pgqueue.Task[..., object], x: int) -> tuple[object, ...]:
        request = self.request
        return (self, request.id, request.retries, request.task, request.queue, request.headers, x)

    assert whoami.bind
    assert whoami(7) == (whoami, None, 0, whoami.name, "reports", {}, 7)


def test_a_bound_tasks_request_is_the_running_jobs_context(app: pgqueue.App) -> None:
    @app.task(bind=True)
    def inspect_me(self: pgqueue.Task[..., object]) -> object:
        return self.request

    job = ClaimedJob(
        41,
        "default",
        inspect_me.name,
        [1],
        {"k": 2},
        5,
        attempt=3,
        max_attempts=4,
        headers={"tenant": "acme"},
    )
    token = _current.set(JobContext(job))
    try:
        request = inspect_me()
    finally:
        _current.reset(token)
    assert isinstance(request, JobContext)
    assert (request.id, request.attempt, request.retries, request.max_attempts) == (41, 3, 2, 4)
    assert (request.args, request.kwargs, request.priority) == ([1], {"k": 2}, 5)
    assert request.task == inspect_me.name
    assert request.headers == {"tenant": "acme"}


def test_self_retry_raises_retry_with_countdown_and_the_exception_as_reason(
    app: pgqueue.App,
) -> None:
    @app.task(bind=True)
    def flaky(self: pgqueue.Task[..., None]) -> None:
        try:
            raise ConnectionError("refused")
        except ConnectionError as exc:
            self.retry(exc=exc, countdown=12)

    with pytest.raises(pgqueue.Retry) as info:
        flaky()
    assert info.value.countdown == 12
    assert info.value.reason == "ConnectionError: refused"
    assert isinstance(info.value.__cause__, ConnectionError)


def test_self_retry_past_max_retries_gives_up_and_the_job_fails(app: pgqueue.App) -> None:
    @app.task(bind=True, max_attempts=10, autoretry_for=(Exception,))
    def stubborn(self: pgqueue.Task[..., None]) -> None:
        self.retry(exc=ValueError("still bad"), max_retries=2)

    job = ClaimedJob(1, "default", stubborn.name, [], {}, 0, attempt=3, max_attempts=10)
    token = _current.set(JobContext(job))
    try:
        with pytest.raises(pgqueue.MaxRetriesExceeded, match="after 2 retries") as info:
            stubborn()
    finally:
        _current.reset(token)
    # Whatever autoretry_for says, giving up is final.
    outcome = outcome_of_exception(stubborn, job, info.value)
    assert isinstance(outcome, Failed)
    assert outcome.error["type"] == "pgqueue.errors.MaxRetriesExceeded"
    # One retry earlier it is an ordinary retry request.
    earlier = ClaimedJob(1, "default", stubborn.name, [], {}, 0, attempt=2, max_attempts=10)
    token = _current.set(JobContext(earlier))
    try:
        with pytest.raises(pgqueue.Retry):
            stubborn()
    finally:
        _current.reset(token)


def test_an_unbound_task_is_called_without_itself(app: pgqueue.App) -> None:
    @app.task
    def plain(x: int) -> int:
        return x

    assert not plain.bind
    assert plain.run is plain.fn
    assert plain(3) == 3


def test_eager_mode_runs_a_bound_task_with_its_request(app: pgqueue.App) -> None:
    from pgqueue.testing import eager

    @app.task(bind=True)
    def numbered(self: pgqueue.Task[..., list[object]], x: int) -> list[object]:
        return [x, self.request.attempt, self.request.retries, self.request.args]

    with eager(app):
        assert numbered.delay(4).wait() == [4, 1, 0, [4]]
