"""`@pgqueue.shared_task`: declared without an App, known to every App, enqueued through the
current App; run by drain(), eager mode, an in-process worker and the periodic scheduler."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

import pgqueue
from pgqueue import periodic, shared
from pgqueue.testing import (
    assert_enqueued,
    assert_not_enqueued,
    drain,
    eager,
    enqueued,
    throwaway_database,
)
from tests.conftest import WorkerThread

StartWorker = Callable[..., WorkerThread]


@pytest.fixture(autouse=True)
def isolated_shared_tasks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test declares its own shared tasks; none outlives it (other tests' Apps would
    register them), and the current App is put back as it was."""
    monkeypatch.setattr(shared, "_current", None)
    before = dict(shared._shared)
    yield
    for name in set(shared._shared) - set(before):
        del shared._shared[name]
        for app in list(shared._apps):
            app.tasks.pop(name, None)


@pytest.fixture
def other_dsn(server_dsn: str, template_db: str) -> Iterator[str]:
    """A second migrated database, for a second App."""
    with throwaway_database(server_dsn, template_db) as dsn:
        yield dsn


def test_a_task_declared_before_the_app_is_known_to_it_and_runs(dsn: str) -> None:
    @pgqueue.shared_task(name="lib.add", max_attempts=4)
    def add(a: int, b: int) -> int:
        return a + b

    app = pgqueue.App(dsn)
    try:
        assert app.tasks["lib.add"].retry_policy.max_attempts == 4
        assert pgqueue.current_app() is app and add.app is app
        job = add.delay(2, 3)
        assert job.task_name == "lib.add"
        assert [(ran.status, ran.result) for ran in drain(app)] == [("succeeded", 5)]
        assert job.refresh().result == 5
    finally:
        app.close()


def test_a_task_declared_after_the_app_is_known_to_it_and_runs(app: pgqueue.App) -> None:
    @pgqueue.shared_task
    def shout(word: str) -> str:
        return word.upper()

    assert app.tasks[shout.name].fn is shout.fn
    shout.apply_async(args=("hi",), countdown=0)
    assert [(ran.task_name, ran.result) for ran in drain(app)] == [(shout.name, "HI")]


def test_calling_it_runs_the_function_inline_without_an_app() -> None:
    @pgqueue.shared_task
    def double(n: int) -> int:
        return 2 * n

    assert double(21) == 42


def test_enqueueing_before_any_app_exists_says_what_to_do() -> None:
    @pgqueue.shared_task(name="lib.early")
    def early() -> None: ...

    with pytest.raises(pgqueue.ConfigurationError) as info:
        early.delay()
    assert str(info.value) == (
        "create a pgqueue.App (or call app.set_as_current()) before enqueueing shared task "
        "lib.early"
    )
    with pytest.raises(pgqueue.ConfigurationError, match=r"create a pgqueue\.App"):
        pgqueue.current_app()


def test_two_apps_each_know_it_and_it_goes_through_the_current_one(
    dsn: str, other_dsn: str
) -> None:
    @pgqueue.shared_task(name="lib.ping")
    def ping() -> str:
        return "pong"

    first = pgqueue.App(dsn)
    second = pgqueue.App(other_dsn, default_queue="second")
    try:
        # Each App has its own Task for it, on that App's default queue.
        assert ping.for_app(first).queue == "default"
        assert ping.for_app(second).queue == "second"
        assert pgqueue.current_app() is second  # the App created last
        ping.delay()
        first.set_as_current()
        ping.delay()
        ping.delay()
        assert len(enqueued(first, ping)) == 2 and len(enqueued(second, ping)) == 1
        assert [ran.queue for ran in drain(second)] == ["second"]
        assert [ran.result for ran in drain(first)] == ["pong", "pong"]
    finally:
        first.close()
        second.close()


def test_a_worker_of_an_app_runs_it_and_makes_its_app_current(
    dsn: str, other_dsn: str, start_worker: StartWorker
) -> None:
    worker_app = pgqueue.App(dsn)

    @pgqueue.shared_task(name="lib.square")
    def square(n: int) -> int:
        job = pgqueue.current_job()
        assert job is not None
        return n * n

    other = pgqueue.App(other_dsn)  # created last: current until the worker starts
    try:
        assert pgqueue.current_app() is other
        start_worker(worker_app)
        assert pgqueue.current_app() is worker_app
        assert square.delay(7).wait(timeout=30) == 49
    finally:
        other.close()
        worker_app.close()


def test_a_bound_shared_task_sees_its_request_and_retries_itself(
    app: pgqueue.App, start_worker: StartWorker
) -> None:
    seen: list[tuple[Any, ...]] = []

    @pgqueue.shared_task(bind=True, max_attempts=3, queue="bound")
    def fetch(self: Any, url: str) -> int:
        seen.append((self.request.id, self.request.retries, self.request.queue, self.app))
        if self.request.retries < 2:
            self.retry(exc=TimeoutError(f"slow {url}"), countdown=0)
        return int(self.request.retries)

    with pytest.raises(pgqueue.Retry):  # a plain call: no job, its first "attempt" retries
        fetch("http://x")
    assert seen == [(None, 0, "bound", app)]
    seen.clear()
    start_worker(app)
    job = fetch.delay("http://x")
    assert job.wait(timeout=30) == 2
    assert seen == [(job.id, n, "bound", app) for n in range(3)]


def test_a_bound_shared_task_called_inline_has_no_job() -> None:
    @pgqueue.shared_task(bind=True, max_attempts=5)
    def whoami(self: Any) -> tuple[Any, ...]:
        return (self.request.id, self.request.retries, self.request.max_attempts, self.name)

    assert whoami() == (None, 0, 5, whoami.name)
    with pytest.raises(pgqueue.Retry):
        whoami.retry(countdown=1)


def test_bad_options_are_refused_at_declaration_and_register_nothing(
    app: pgqueue.App,
) -> None:
    def job() -> None: ...

    declared, registered = set(shared._shared), set(app.tasks)
    bad: list[dict[str, Any]] = [
        {"max_attempts": 0},
        {"queue": "no spaces"},
        {"priority": 40_000},
        {"timeout": 0},
        {"name": " "},
        {"retry_backoff": -1},
        {"autoretry_for": (ValueError, "oops")},
    ]
    for options in bad:
        with pytest.raises(pgqueue.ConfigurationError):
            pgqueue.shared_task(**options)(job)
    assert (set(shared._shared), set(app.tasks)) == (declared, registered)


def test_a_name_clash_with_an_apps_own_task_is_refused_both_ways(app: pgqueue.App) -> None:
    @app.task(name="report")
    def own_report() -> None: ...

    def library_report() -> None: ...

    with pytest.raises(pgqueue.ConfigurationError, match="has the name of a task of"):
        pgqueue.shared_task(name="report")(library_report)
    assert app.tasks["report"].fn is own_report.fn

    @pgqueue.shared_task(name="lib.cleanup")
    def cleanup() -> None: ...

    def own_cleanup() -> None: ...

    with pytest.raises(pgqueue.ConfigurationError, match="is the name of a shared task"):
        app.task(name="lib.cleanup")(own_cleanup)
    later = pgqueue.App(app.dsn)  # a new App registers the shared task, not the refused one
    try:
        assert later.tasks["lib.cleanup"].fn is cleanup.fn
    finally:
        later.close()
        app.set_as_current()

    def another_cleanup() -> None: ...

    with pytest.raises(pgqueue.ConfigurationError, match="two shared tasks are named"):
        pgqueue.shared_task(name="lib.cleanup")(another_cleanup)
    with pytest.raises(pgqueue.ConfigurationError, match="is a shared task already"):
        app.task(cleanup)
    with pytest.raises(pgqueue.ConfigurationError, match="is a task already"):
        pgqueue.shared_task(cleanup)


def test_testing_helpers_work_with_shared_tasks(app: pgqueue.App) -> None:
    @pgqueue.shared_task(queue="mail")
    def send(to: str) -> str:
        return f"sent to {to}"

    assert_not_enqueued(send)
    send.apply_async(args=("ada@example.com",), countdown=60)
    assert_enqueued(send, args=["ada@example.com"], queue="mail", countdown=60)
    with eager(app):
        assert send.delay("bob@example.com").wait() == "sent to bob@example.com"
    assert len(enqueued(app, send)) == 1


def test_delay_many_and_the_async_twins_go_through_the_current_app(app: pgqueue.App) -> None:
    @pgqueue.shared_task
    async def greet(name: str) -> str:
        return f"hello {name}"

    ids = greet.delay_many([("a",), {"name": "b"}])

    async def scenario() -> list[int]:
        job = await greet.adelay("c")
        other = await greet.aapply_async(args=("d",))
        more = await greet.adelay_many([("e",)])
        await app.aclose()
        return [job.id, other.id, *more]

    ids += asyncio.run(scenario())
    ran = drain(app)
    assert [r.id for r in ran] == ids
    assert [r.result for r in ran] == [f"hello {n}" for n in "abcde"]


def test_app_periodic_schedules_a_shared_task(app: pgqueue.App) -> None:
    @app.periodic(every=timedelta(minutes=5), args=(3,))
    @pgqueue.shared_task(name="lib.tick")
    def tick(n: int) -> int:
        return n + 1

    assert isinstance(tick, pgqueue.SharedTask)
    [schedule] = app.schedules.values()
    assert schedule.task_name == "lib.tick"
    with app.connect() as conn:
        now = periodic.db_now(conn)
        periodic.sync_schedules(conn, [schedule], now - timedelta(minutes=6), app.tasks)
        fired = periodic.fire_due(conn, app, now)
    assert len(fired) == 1
    assert [(ran.task_name, ran.result) for ran in drain(app)] == [("lib.tick", 4)]


# The user's App, as pgqueue.testing's plugin finds it; it points it at each test's database.
user_app = pgqueue.App("postgresql://nobody@127.0.0.1:1/none")


@pytest.mark.pgqueue_app(user_app)
def test_the_pgqueue_app_fixture_makes_its_app_current(pgqueue_app: pgqueue.App) -> None:
    @pgqueue.shared_task
    def hello() -> str:
        return "hello"

    assert pgqueue_app is user_app and pgqueue.current_app() is user_app
    hello.delay()
    assert [ran.result for ran in drain(user_app)] == ["hello"]


def test_a_shared_task_declared_unique_makes_its_key_through_any_app(app: pgqueue.App) -> None:
    @pgqueue.shared_task(name="lib.refresh", unique=("account",), bind=True)
    def refresh(self: Any, account: int, full: bool = False) -> None: ...

    first = refresh.delay(3)
    assert first.created and first.unique_key == 'lib.refresh:{"account":3}'
    assert refresh.delay(3, full=True).id == first.id
    with pytest.raises(pgqueue.ConfigurationError, match="has no argument 'acct'"):
        pgqueue.shared_task(name="lib.bad", unique=("acct",))(lambda account: None)
