"""Enqueue arguments are checked and serialised before any SQL runs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

import pgqueue
from pgqueue.enqueue import build_request

# Nothing listens here: reaching the database would raise DatabaseUnavailable instead.
UNREACHABLE = "postgresql://postgres@127.0.0.1:1/nowhere?connect_timeout=2"


@pytest.fixture
def task() -> Iterator[pgqueue.Task[Any, Any]]:
    app = pgqueue.App(UNREACHABLE)

    @app.task(queue="mail", priority=3, max_attempts=4)
    def send(*args: Any, **kwargs: Any) -> None: ...

    yield send
    app.close()


def test_valid_request_is_serialised_with_task_defaults(task: pgqueue.Task[Any, Any]) -> None:
    request = build_request(task, (1, ("a", "b")), {"k": None})
    assert request.args_json == '[1,["a","b"]]'
    assert request.kwargs_json == '{"k":null}'
    assert (request.queue, request.priority, request.max_attempts) == ("mail", 3, 4)
    assert request.countdown is None and request.eta is None


def test_options_override_task_defaults(task: pgqueue.Task[Any, Any]) -> None:
    request = build_request(task, priority=-7, queue="other", countdown=timedelta(minutes=1))
    assert (request.queue, request.priority, request.countdown) == ("other", -7, 60.0)


def test_aware_eta_is_kept(task: pgqueue.Task[Any, Any]) -> None:
    eta = datetime(2030, 1, 1, tzinfo=timezone(timedelta(hours=2)))
    assert build_request(task, eta=eta).eta == eta


def test_naive_eta_is_refused(task: pgqueue.Task[Any, Any]) -> None:
    with pytest.raises(pgqueue.ConfigurationError, match="timezone-aware"):
        build_request(task, eta=datetime(2030, 1, 1))


def test_countdown_and_eta_together_are_refused(task: pgqueue.Task[Any, Any]) -> None:
    with pytest.raises(pgqueue.ConfigurationError, match="not both"):
        build_request(task, countdown=5, eta=datetime.now(timezone.utc))


@pytest.mark.parametrize("countdown", [-1, -0.001, timedelta(seconds=-5)])
def test_negative_countdown_is_refused(task: pgqueue.Task[Any, Any], countdown: Any) -> None:
    with pytest.raises(pgqueue.ConfigurationError, match="countdown"):
        build_request(task, countdown=countdown)


@pytest.mark.parametrize("countdown", [float("nan"), float("inf")])
def test_non_finite_countdown_is_refused(task: pgqueue.Task[Any, Any], countdown: float) -> None:
    with pytest.raises(pgqueue.ConfigurationError, match="countdown"):
        build_request(task, countdown=countdown)


@pytest.mark.parametrize("countdown", ["5", True])
def test_countdown_must_be_a_number(task: pgqueue.Task[Any, Any], countdown: Any) -> None:
    with pytest.raises(TypeError, match="countdown"):
        build_request(task, countdown=countdown)


@pytest.mark.parametrize("queue", ["", "has space", "semi;colon", "x" * 101, "a@b"])
def test_bad_queue_name_is_refused(task: pgqueue.Task[Any, Any], queue: str) -> None:
    with pytest.raises(pgqueue.ConfigurationError, match="queue name"):
        build_request(task, queue=queue)


@pytest.mark.parametrize("priority", [32768, -32769, 1.5, "high", True])
def test_bad_priority_is_refused(task: pgqueue.Task[Any, Any], priority: Any) -> None:
    with pytest.raises(pgqueue.ConfigurationError, match="priority"):
        build_request(task, priority=priority)


@pytest.mark.parametrize("args", ["abc", b"abc", 5, {"a": 1}, {1, 2}])
def test_args_must_be_a_sequence(task: pgqueue.Task[Any, Any], args: Any) -> None:
    with pytest.raises(TypeError, match="args must be a list or tuple"):
        build_request(task, args)


def test_args_none_means_no_arguments_as_in_celery(task: pgqueue.Task[Any, Any]) -> None:
    assert build_request(task, None).args_json == "[]"


def test_kwargs_must_be_a_mapping(task: pgqueue.Task[Any, Any]) -> None:
    with pytest.raises(TypeError, match="kwargs must be a dict"):
        build_request(task, (), [("a", 1)])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"eta": datetime(2030, 1, 1)}, pgqueue.ConfigurationError),
        ({"countdown": -1}, pgqueue.ConfigurationError),
        ({"queue": "bad queue"}, pgqueue.ConfigurationError),
        ({"priority": 10**6}, pgqueue.ConfigurationError),
        ({"args": "abc"}, TypeError),
        ({"args": (object(),)}, TypeError),
    ],
)
def test_refusals_happen_before_connecting(
    task: pgqueue.Task[Any, Any], options: dict[str, Any], error: type[Exception]
) -> None:
    # The app's database is unreachable, so getting this error (not DatabaseUnavailable)
    # shows the call was refused before any connection or write was attempted.
    with pytest.raises(error):
        task.apply_async(**options)
