"""Signals: connecting receivers, what they are sent, and that a raising receiver costs nothing."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

import pgqueue
from pgqueue import signals
from pgqueue.outcome import (
    Cancelled,
    ClaimedJob,
    Failed,
    LeaseLost,
    RetryLater,
    Succeeded,
    simple_error,
)

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/nowhere"


@pytest.fixture
def app() -> Iterator[pgqueue.App]:
    application = pgqueue.App(UNREACHABLE)
    yield application
    application.close()


@pytest.fixture
def received() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """Every task signal, recorded as (name, kwargs); disconnected afterwards."""
    events: list[tuple[str, dict[str, Any]]] = []

    def record(signal: signals.Signal, **kwargs: Any) -> None:
        events.append((signal.name, kwargs))

    names = ("task_prerun", "task_postrun", "task_success", "task_failure", "task_retry")
    for name in names:
        getattr(signals, name).connect(record)
    yield events
    for name in names:
        getattr(signals, name).disconnect(record)
    assert not signals.live


def _job(task_name: str, attempt: int = 1) -> ClaimedJob:
    return ClaimedJob(7, "default", task_name, [1], {}, 0, attempt=attempt, max_attempts=3)


def test_nothing_is_live_until_a_receiver_connects() -> None:
    assert not signals.live

    def receiver(**kwargs: Any) -> None: ...

    assert signals.worker_ready.connect(receiver) is receiver
    signals.worker_ready.connect(receiver)  # twice is once
    assert signals.worker_ready.receivers == (receiver,)
    assert signals.live == {"worker_ready"}
    assert signals.worker_ready.disconnect(receiver)
    assert not signals.worker_ready.disconnect(receiver)
    assert not signals.live


def test_a_success_sends_success_then_postrun_with_the_stored_result(
    app: pgqueue.App, received: list[tuple[str, dict[str, Any]]]
) -> None:
    @app.task
    def add(a: int) -> int:
        return a

    job = _job(add.name)
    signals.attempt_started(app, job)
    signals.attempt_ended(app, Succeeded(job, '{"total": 3}'), 0.25)
    assert [name for name, _ in received] == ["task_prerun", "task_success", "task_postrun"]
    prerun, success, postrun = (kwargs for _, kwargs in received)
    assert prerun["sender"] is add and prerun["task_id"] == 7
    assert prerun["job"].attempt == 1 and prerun["job"].args == [1]
    assert success["result"] == {"total": 3} and success["duration"] == 0.25
    assert postrun["status"] == "succeeded"


def test_failure_retry_cancel_and_lost_each_send_theirs(
    app: pgqueue.App, received: list[tuple[str, dict[str, Any]]]
) -> None:
    job = _job("not.registered", attempt=2)
    error = simple_error("ValueError", "bad")
    signals.attempt_ended(app, Failed(job, error), 1.0)
    signals.attempt_ended(app, RetryLater(job, error, delay=30.0), 1.0)
    signals.attempt_ended(app, Cancelled(job, simple_error("Cancelled", "asked")), 1.0)
    signals.attempt_ended(app, LeaseLost(job), 1.0)
    assert [(name, kwargs.get("status")) for name, kwargs in received] == [
        ("task_failure", None),
        ("task_postrun", "failed"),
        ("task_retry", None),
        ("task_postrun", "queued"),
        ("task_postrun", "cancelled"),
        ("task_postrun", "lost"),
    ]
    failure, retry = received[0][1], received[2][1]
    assert failure["sender"] is None  # a task this worker does not know
    assert failure["error"] == error
    assert (retry["countdown"], retry["eta"]) == (30.0, None)


def test_a_raising_receiver_is_logged_once_per_exception_type_and_others_still_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    def broken(**kwargs: Any) -> None:
        calls.append("broken")
        raise RuntimeError(f"broken on {kwargs['n']}")

    def fine(**kwargs: Any) -> None:
        calls.append("fine")

    signals.task_rescued.connect(broken)
    signals.task_rescued.connect(fine)
    try:
        with caplog.at_level(logging.ERROR, logger="pgqueue.signals"):
            for n in range(3):
                signals.task_rescued.send(n=n)
    finally:
        signals.task_rescued.disconnect(broken)
        signals.task_rescued.disconnect(fine)
    assert calls == ["broken", "fine"] * 3
    reports = [r for r in caplog.records if r.name == "pgqueue.signals"]
    assert len(reports) == 1
    assert "task_rescued" in reports[0].getMessage()
    assert "RuntimeError" in reports[0].getMessage()


def test_rescued_rows_are_sent_one_by_one() -> None:
    got: list[dict[str, Any]] = []

    def receiver(**kwargs: Any) -> None:
        got.append(kwargs)

    signals.task_rescued.connect(receiver)
    try:
        signals.rescued(
            [{"id": 3, "task_name": "t", "attempts": 1, "max_attempts": 3, "status": "queued"}]
        )
    finally:
        signals.task_rescued.disconnect(receiver)
    assert got == [
        {
            "signal": signals.task_rescued,
            "sender": None,
            "task_id": 3,
            "task_name": "t",
            "attempts": 1,
            "status": "queued",
        }
    ]


def test_connect_refuses_what_cannot_be_called() -> None:
    with pytest.raises(TypeError, match="callable"):
        signals.task_prerun.connect("not a function")  # type: ignore[arg-type]
