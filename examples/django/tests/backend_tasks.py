"""Django tasks for the Tasks-backend tests (Django's own `@task`, run by pgqueue)."""

from __future__ import annotations

from django.tasks import TaskContext, task

import pgqueue


@task()
def noop(*args: object, **kwargs: object) -> None:
    return None


@task()
async def noop_async(*args: object, **kwargs: object) -> None:
    return None


@task()
def meaning_of_life() -> int:
    return 42


@task()
async def add_async(a: int, b: int) -> int:
    return a + b


@task()
def echo(*args: object, **kwargs: object) -> list[object]:
    return [list(args), kwargs]


@task()
def failing_value_error() -> None:
    raise ValueError("This task failed due to ValueError")


@task()
def failing_system_exit() -> None:
    raise SystemExit("This task failed due to SystemExit")


@task()
def complex_exception() -> None:
    raise ValueError(ValueError("This task failed"))


@task()
def complex_return_value() -> object:
    return {"a set": {1, 2}}


@task(takes_context=True)
def get_task_id(context: TaskContext) -> str:
    return context.task_result.id


@task(takes_context=True)
def attempt_and_workers(context: TaskContext) -> list[object]:
    return [context.attempt, len(context.task_result.worker_ids)]


@task(takes_context=True)
def retried_once(context: TaskContext) -> int:
    if context.attempt == 1:
        raise pgqueue.Retry(countdown=0)
    return context.attempt


@task(priority=-5)
def low() -> str:
    return "low"


@task(priority=50)
def high() -> str:
    return "high"


@task(queue_name="emails")
def email(address: str) -> str:
    return address
