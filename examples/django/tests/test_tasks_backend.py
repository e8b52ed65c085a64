"""Django's Tasks framework on pgqueue (settings.TASKS names PgQueueBackend): the behaviours
Django documents for a backend, against real PostgreSQL. Jobs are run in the test by
pgqueue.testing.drain(), through the workers' own code; test_orders.py runs a real worker."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import backend_tasks as tasks
import psycopg
import pytest
from django.db import transaction
from django.tasks import TaskResultStatus, default_task_backend, task_backends
from django.tasks.exceptions import InvalidTask, TaskResultDoesNotExist, TaskResultMismatch
from django.tasks.signals import task_enqueued, task_finished, task_started
from django.test import override_settings
from django.utils import timezone
from orders.tasks import ship_order

from pgqueue.contrib.django import PgQueueBackend, app
from pgqueue.testing import adrain, drain

pytestmark = pytest.mark.django_db(transaction=True)


def job_row(dsn: str, job_id: str) -> tuple[object, ...] | None:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT task_name, queue, priority, run_at, status FROM pgqueue_jobs WHERE id = %s",
            (int(job_id),),
        ).fetchone()


def test_the_backend_is_pgqueues_and_says_what_it_supports() -> None:
    assert isinstance(task_backends["default"], PgQueueBackend)
    assert default_task_backend.alias == "default"
    assert default_task_backend.supports_defer
    assert default_task_backend.supports_async_task
    assert default_task_backend.supports_get_result
    assert default_task_backend.supports_priority


def test_enqueue_writes_a_ready_job_and_returns_its_result(test_dsn: str) -> None:
    result = tasks.noop.enqueue(1, two=3)

    assert result.status == TaskResultStatus.READY
    assert result.is_finished is False
    assert result.enqueued_at is not None
    assert result.started_at is None and result.finished_at is None
    assert result.args == [1] and result.kwargs == {"two": 3}
    assert result.task == tasks.noop
    assert result.attempts == 0
    with pytest.raises(ValueError, match="Task has not finished yet"):
        _ = result.return_value
    assert job_row(test_dsn, result.id)[:3] == ("backend_tasks.noop", "default", 0)


def test_a_job_runs_and_its_result_reads_back(test_dsn: str) -> None:
    for task in (tasks.noop, tasks.noop_async):
        result = task.enqueue(1, two=3)
        drain(app)

        done = task.get_result(result.id)
        assert done.status == TaskResultStatus.SUCCESSFUL
        assert done.is_finished is True
        assert done.return_value is None
        assert done.started_at >= done.enqueued_at
        assert done.last_attempted_at == done.started_at
        assert done.finished_at >= done.started_at
        assert done.args == [1] and done.kwargs == {"two": 3}
        assert done.attempts == 1 and len(done.worker_ids) == 1
        assert done.errors == []


def test_aenqueue_and_aget_result() -> None:
    async def scenario() -> None:
        result = await tasks.add_async.aenqueue(2, 3)
        assert result.status == TaskResultStatus.READY
        await adrain(app)
        done = await tasks.add_async.aget_result(result.id)
        assert done.status == TaskResultStatus.SUCCESSFUL
        assert done.return_value == 5
        await result.arefresh()
        assert result.status == TaskResultStatus.SUCCESSFUL and result.return_value == 5

    asyncio.run(scenario())


def test_refresh_reads_the_row_again() -> None:
    result = tasks.meaning_of_life.enqueue()
    drain(app)
    assert result.status == TaskResultStatus.READY
    result.refresh()
    assert result.status == TaskResultStatus.SUCCESSFUL
    assert result.return_value == 42


@pytest.mark.parametrize(
    ("task", "exception", "message"),
    [
        (tasks.failing_value_error, ValueError, "This task failed due to ValueError"),
        (tasks.failing_system_exit, SystemExit, "This task failed due to SystemExit"),
    ],
)
def test_a_failing_task_ends_failed_with_its_error(
    task: object, exception: type[BaseException], message: str
) -> None:
    result = task.enqueue()  # type: ignore[attr-defined]
    drain(app)

    done = task.get_result(result.id)  # type: ignore[attr-defined]
    assert done.status == TaskResultStatus.FAILED
    assert done.is_finished is True
    with pytest.raises(ValueError, match="Task failed"):
        _ = done.return_value
    assert done.finished_at >= done.started_at >= done.enqueued_at
    assert len(done.errors) == 1
    assert done.errors[0].exception_class is exception
    assert done.errors[0].traceback.endswith(f"{exception.__name__}: {message}\n")


def test_a_complex_exception_keeps_its_traceback() -> None:
    result = tasks.complex_exception.enqueue()
    drain(app)
    done = tasks.complex_exception.get_result(result.id)
    assert done.status == TaskResultStatus.FAILED
    assert done.errors[0].exception_class is ValueError
    assert "This task failed" in done.errors[0].traceback


def test_a_return_value_json_cannot_hold_fails_the_task() -> None:
    result = tasks.complex_return_value.enqueue()
    drain(app)
    done = tasks.complex_return_value.get_result(result.id)
    assert done.status == TaskResultStatus.FAILED
    assert done.errors[0].exception_class is TypeError
    assert "Unsupported type" in done.errors[0].traceback


def test_a_task_that_takes_context_gets_its_result_and_attempt() -> None:
    by_id = tasks.get_task_id.enqueue()
    attempt = tasks.attempt_and_workers.enqueue()
    drain(app)
    assert tasks.get_task_id.get_result(by_id.id).return_value == by_id.id
    assert tasks.attempt_and_workers.get_result(attempt.id).return_value == [1, 1]


def test_a_retried_job_is_ready_again_then_keeps_every_attempt() -> None:
    result = tasks.retried_once.enqueue()
    ran = drain(app)

    assert [r.status for r in ran] == ["queued", "succeeded"]
    done = tasks.retried_once.get_result(result.id)
    assert done.status == TaskResultStatus.SUCCESSFUL
    assert done.return_value == 2
    assert done.attempts == 2 and len(done.worker_ids) == 2
    assert [e.exception_class_path for e in done.errors] == ["pgqueue.Retry"] or len(
        done.errors
    ) == 1


def test_priority_orders_the_jobs(test_dsn: str) -> None:
    low = tasks.low.enqueue()
    high = tasks.high.enqueue()
    urgent = tasks.low.using(priority=100).enqueue()
    assert job_row(test_dsn, low.id)[2] == -5
    assert job_row(test_dsn, high.id)[2] == 50

    ran = drain(app)
    assert [str(r.id) for r in ran] == [urgent.id, high.id, low.id]


def test_run_after_defers_the_job(test_dsn: str) -> None:
    later = timezone.now() + timedelta(hours=1)
    result = tasks.noop.using(run_after=later).enqueue()

    assert drain(app) == []
    assert tasks.noop.get_result(result.id).status == TaskResultStatus.READY
    assert job_row(test_dsn, result.id)[3] == later


def test_a_queue_name_is_the_jobs_queue(test_dsn: str) -> None:
    result = tasks.email.enqueue("a@example.com")
    assert job_row(test_dsn, result.id)[1] == "emails"
    assert "emails" in app.queues()  # a worker serves the backend's QUEUES
    drain(app)
    assert tasks.email.get_result(result.id).return_value == "a@example.com"


def test_an_unknown_queue_is_refused_before_anything_is_written(test_dsn: str) -> None:
    with pytest.raises(InvalidTask, match="Queue 'unknown' is not valid for backend"):
        tasks.noop.using(queue_name="unknown").enqueue()
    with (
        override_settings(
            TASKS={"default": {"BACKEND": "pgqueue.contrib.django.PgQueueBackend", "QUEUES": []}}
        ),
        pytest.raises(InvalidTask, match="invalid queue name"),
    ):
        tasks.noop.using(queue_name="no spaces here").enqueue()
    with psycopg.connect(test_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pgqueue_jobs").fetchone() == (0,)


def test_arguments_json_cannot_hold_are_refused_before_anything_is_written(
    test_dsn: str,
) -> None:
    with pytest.raises(TypeError, match="Unsupported type"):
        tasks.noop.enqueue({1, 2})
    with psycopg.connect(test_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM pgqueue_jobs").fetchone() == (0,)


def test_get_result_of_what_is_not_a_result() -> None:
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result("123456789")
    with pytest.raises(TaskResultDoesNotExist):
        default_task_backend.get_result("not-a-number")
    job = ship_order.delay(1)  # a pgqueue task's job, not a Django task's
    with pytest.raises(TaskResultDoesNotExist, match="not of a Django task"):
        default_task_backend.get_result(str(job.id))
    other = tasks.noop.enqueue()
    with pytest.raises(TaskResultMismatch):
        tasks.meaning_of_life.get_result(other.id)


def test_a_rolled_back_atomic_block_leaves_no_result() -> None:
    with pytest.raises(RuntimeError), transaction.atomic():
        result = tasks.noop.enqueue()
        raise RuntimeError("rolled back")
    with pytest.raises(TaskResultDoesNotExist):
        tasks.noop.get_result(result.id)


def test_a_cancelled_job_reads_as_failed() -> None:
    result = tasks.noop.enqueue()
    app.cancel(int(result.id))
    done = tasks.noop.get_result(result.id)
    assert done.status == TaskResultStatus.FAILED
    assert done.errors[0].exception_class_path == "pgqueue.errors.JobCancelled"


def test_djangos_signals_are_sent() -> None:
    seen: list[tuple[str, str, str]] = []

    def record(name: str):  # type: ignore[no-untyped-def]
        def receiver(sender, task_result, **kwargs):  # type: ignore[no-untyped-def]
            seen.append((name, task_result.id, task_result.status.value))

        return receiver

    receivers = [record("enqueued"), record("started"), record("finished")]
    for signal, receiver in zip(
        (task_enqueued, task_started, task_finished), receivers, strict=True
    ):
        signal.connect(receiver)
    try:
        result = tasks.noop.enqueue()
        drain(app)
    finally:
        for signal, receiver in zip(
            (task_enqueued, task_started, task_finished), receivers, strict=True
        ):
            signal.disconnect(receiver)
    assert seen == [
        ("enqueued", result.id, "READY"),
        ("started", result.id, "RUNNING"),
        ("finished", result.id, "SUCCESSFUL"),
    ]


def test_a_task_outside_the_backends_queues_is_refused_at_declaration() -> None:
    with pytest.raises(InvalidTask, match="Queue 'elsewhere' is not valid"):
        from django.tasks import task

        task(queue_name="elsewhere")(tasks.noop.func)


def test_the_options_are_checked() -> None:
    with pytest.raises(InvalidTask, match="unknown key"):
        PgQueueBackend("x", {"OPTIONS": {"RETRIES": 3}})
    with pytest.raises(InvalidTask, match="MAX_ATTEMPTS"):
        PgQueueBackend("x", {"OPTIONS": {"MAX_ATTEMPTS": 0}})
    assert PgQueueBackend("x", {"OPTIONS": {"MAX_ATTEMPTS": 2}}).max_attempts == 2
    assert task_backends["default"].check() == []
