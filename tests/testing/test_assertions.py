"""enqueued() and assert_enqueued(): what a test's code enqueued, and failures that list it."""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest

import pgqueue
from pgqueue.testing import assert_enqueued, assert_not_enqueued, drain, enqueued


def test_enqueued_lists_queued_jobs_by_task_and_queue(app: pgqueue.App, dsn: str) -> None:
    @app.task
    def welcome(user_id: int) -> None: ...

    @app.task(queue="mail")
    def receipt(order_id: int) -> None: ...

    first = welcome.delay(1)
    second = receipt.delay(2)
    third = welcome.apply_async(args=(3,), queue="mail")
    with psycopg.connect(dsn) as caller:
        welcome.apply_async(args=(4,), connection=caller)  # not committed: not there
        assert [job.id for job in enqueued(app)] == [first.id, second.id, third.id]
        caller.rollback()
    assert [job.args for job in enqueued(app, welcome)] == [[1], [3]]
    assert [job.id for job in enqueued(app, queue="mail")] == [second.id, third.id]
    assert [job.id for job in enqueued(app, receipt.name, queue="mail")] == [second.id]
    drain(app)
    assert enqueued(app) == []


def test_assert_enqueued_matches_arguments_queue_priority_and_countdown(
    app: pgqueue.App,
) -> None:
    @app.task
    def remind(user_id: int, *, channel: str = "mail") -> None: ...

    remind.apply_async(args=(7,), kwargs={"channel": "sms"}, countdown=60, priority=5)
    remind.delay(8)

    [job] = assert_enqueued(remind, args=(7,), kwargs={"channel": "sms"}, countdown=60)
    assert job.priority == 5
    assert_enqueued(remind, args=[7], countdown=timedelta(minutes=1), priority=5)
    assert_enqueued(remind, args=[8], queue="default", countdown=0)
    assert len(assert_enqueued(remind, count=2)) == 2


def test_a_failed_assertion_lists_what_was_enqueued(app: pgqueue.App) -> None:
    @app.task
    def remind(user_id: int) -> None: ...

    @app.task
    def other() -> None: ...

    remind.apply_async(args=(7,), countdown=60)
    other.delay()

    with pytest.raises(AssertionError) as failure:
        assert_enqueued(remind, args=[8])
    message = str(failure.value)
    assert f"expected a job of {remind.name} with args=[8], found 0; queued jobs (2):" in message
    assert f"{remind.name}(args=[7], kwargs={{}}) queue=default countdown=60" in message
    assert f"{other.name}(args=[], kwargs={{}}) queue=default" in message

    with pytest.raises(AssertionError, match=r"expected a job .* countdown=30, found 0"):
        assert_enqueued(remind, args=[7], countdown=30)
    with pytest.raises(AssertionError, match=r"expected 2 job\(s\) of .*remind, found 1"):
        assert_enqueued(remind, count=2)


def test_assert_not_enqueued(app: pgqueue.App) -> None:
    @app.task
    def remind(user_id: int) -> None: ...

    assert_not_enqueued(remind)
    remind.delay(1)
    with pytest.raises(AssertionError, match=r"expected no job of .*remind, found 1:\n  #\d+"):
        assert_not_enqueued(remind)
